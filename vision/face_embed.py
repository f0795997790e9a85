"""Face embedding with dlib's ResNet face descriptor (``dlib_resnet_v1``): 128-d, Euclidean metric."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vision.align import CHIP_SIZE
from vision.config import FaceEmbedderConfig, RuntimeConfig
from vision.runtime import InvalidImageError, ModelLoadError, OnnxModel

MODEL_ID = "dlib_resnet_v1"
EMBEDDING_DIM = 128


class FaceEmbedder:
    """Aligned 150x150 BGR chips in, (N, 128) float32 descriptors out (not normalised, as dlib's)."""

    def __init__(
        self,
        config: FaceEmbedderConfig | None = None,
        *,
        model: OnnxModel | None = None,
        runtime: RuntimeConfig | None = None,
    ) -> None:
        self.config = config or FaceEmbedderConfig()
        self.model = model if model is not None else OnnxModel(MODEL_ID, config=runtime)
        self.model_id = self.model.model_id
        if self.model_id != MODEL_ID:
            raise ModelLoadError(
                f"FaceEmbedder needs the {MODEL_ID} model, got {self.model_id}",
                code="model_signature",
                model_id=self.model_id,
            )

    def embed(self, chips_bgr: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Descriptors for a stack of chips (N, 150, 150, 3) uint8 BGR, or one chip (150, 150, 3)."""
        chips = np.asarray(chips_bgr)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.dtype != np.uint8 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise InvalidImageError(
                f"chips must be uint8 (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.dtype} {chips.shape}"
            )
        out = np.zeros((len(chips), EMBEDDING_DIM), dtype=np.float32)
        step = self.config.max_batch
        for start in range(0, len(chips), step):
            batch = chips[start : start + step]
            # BGR -> RGB and HWC -> CHW; the graph does its own mean/scale on 0..255 values.
            blob = np.ascontiguousarray(batch[:, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
            out[start : start + len(batch)] = self.model.run({self.model.input_names[0]: blob})[0]
        return out

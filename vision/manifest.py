"""The project's model manifest: which ONNX files we ship, their sha256, licence, source and signature.

``vision/models/manifest.json`` is the single source of truth; :class:`vision.runtime.OnnxModel`
checks every file against it at load.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vision.errors import VisionError

MODELS_DIR = Path(__file__).resolve().parent / "models"
MANIFEST_PATH = MODELS_DIR / "manifest.json"


class ManifestError(VisionError):
    """The manifest is missing, malformed, or does not list the requested model."""

    def __init__(self, message: str, *, code: str = "manifest_invalid") -> None:
        super().__init__(message, code=code)


class TensorSpec(BaseModel):
    """One model input as the manifest declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Tensor name in the ONNX graph.")
    dtype: str = Field(default="float32", description="Element type expected by the graph (numpy name).")
    shape: list[int | str] = Field(description="Declared shape; strings are symbolic (dynamic) dimensions.")
    warmup_shape: list[int] = Field(
        description="Concrete shape used for the warm-up run at load, chosen near the real working size "
        "so the memory arena is sized once at start-up rather than on the first real frame."
    )


class ModelEntry(BaseModel):
    """One shipped model file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Stable model id, e.g. 'dlib_resnet_v1'; templates are tagged with it.")
    file: str = Field(description="File name inside vision/models/.")
    task: str = Field(description="What the model does: face_detection, face_embedding, person_detection.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex sha256 of the file.")
    size_bytes: int = Field(gt=0, description="File size; a cheap first check for truncated files.")
    license: str = Field(description="SPDX-style licence of the weights (and packaging).")
    source: str = Field(description="Provenance: registry package@version and file inside, conversion steps.")
    inputs: list[TensorSpec] = Field(min_length=1, description="Graph inputs, in order.")
    outputs: list[str] = Field(min_length=1, description="Graph output names, in the order run() returns.")


class Manifest(BaseModel):
    """The whole manifest file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(ge=1, le=1, description="Manifest format version; only 1 exists.")
    models: list[ModelEntry] = Field(description="Every model shipped in vision/models/.")

    def get(self, model_id: str) -> ModelEntry:
        """Return the entry for ``model_id`` or raise :class:`ManifestError` (code ``unknown_model``)."""
        for entry in self.models:
            if entry.id == model_id:
                return entry
        known = ", ".join(e.id for e in self.models)
        raise ManifestError(f"model {model_id!r} is not in the manifest ({known})", code="unknown_model")


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and validate the manifest (default: the one shipped in ``vision/models/``)."""
    path = MANIFEST_PATH if path is None else path
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ManifestError(f"cannot read model manifest {path}: {err}", code="manifest_missing") from err
    try:
        return Manifest.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as err:
        raise ManifestError(f"model manifest {path} is invalid: {err}") from err

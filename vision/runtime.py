"""ONNX Runtime model runner: explicit session options, checksum at load, warm-up, latency metrics.

Every model the project runs goes through :class:`OnnxModel`, so a wrong, missing or truncated model
file is a :class:`ModelLoadError` at start-up, never a crash on the first frame.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from vision.config import RuntimeConfig
from vision.errors import VisionError
from vision.manifest import MODELS_DIR, Manifest, ModelEntry, load_manifest

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


_CPU = "CPUExecutionProvider"
# Config short names to ONNX Runtime's provider names, so config files never spell ORT internals.
_ORT_NAMES = {
    "cpu": _CPU,
    "openvino": "OpenVINOExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_SHORT_NAMES = {ort_name: short for short, ort_name in _ORT_NAMES.items()}


def provider_plan(preferred: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the providers a session is asked for, in order, CPU always last; the preferred ones this
    onnxruntime build does not have), as config short names. Models and doctor both use it."""
    available = ort.get_available_providers()
    chosen = [short for short in preferred if _ORT_NAMES[short] in available]
    missing = [short for short in preferred if _ORT_NAMES[short] not in available]
    return (chosen if "cpu" in chosen else [*chosen, "cpu"]), missing


class ModelLoadError(VisionError):
    """A model file is missing, truncated, has the wrong sha256, or does not have the declared signature.

    Codes: ``model_missing``, ``model_truncated``, ``model_checksum``, ``model_invalid``, ``model_signature``.
    """

    def __init__(self, message: str, *, code: str = "model_invalid", model_id: str = "") -> None:
        super().__init__(message, code=code, model_id=model_id)


class InferenceError(VisionError):
    """A run failed: wrong feeds (code ``bad_input``) or the runtime raised (``inference_failed``)."""

    def __init__(self, message: str, *, code: str = "inference_failed", model_id: str = "") -> None:
        super().__init__(message, code=code, model_id=model_id)


class InvalidImageError(VisionError):
    """An image or frame handed to the vision pipeline is unusable.

    Codes: ``bad_image`` (undecodable bytes), ``empty_image``, ``bad_frame`` (wrong dtype/shape).
    """

    def __init__(self, message: str, *, code: str = "bad_frame") -> None:
        super().__init__(message, code=code)


def as_bgr_frame(frame: object) -> npt.NDArray[np.uint8]:
    """Check that ``frame`` is an HxWx3 uint8 BGR array (grayscale HxW is expanded) and return it.

    Raises :class:`InvalidImageError` (code ``bad_frame`` / ``empty_image``) otherwise, so a camera that
    returns garbage is a counted error rather than an exception deep inside OpenCV.
    """
    if not isinstance(frame, np.ndarray):
        raise InvalidImageError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise InvalidImageError(f"frame must be uint8, got {frame.dtype}")
    if frame.size == 0:
        raise InvalidImageError("frame is empty", code="empty_image")
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2))
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InvalidImageError(f"frame must be HxWx3 (BGR) or HxW, got shape {frame.shape}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise InvalidImageError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to analyse")
    return frame


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _release_model_bytes(session: ort.InferenceSession) -> None:
    """Drop the copy of the model file ONNX Runtime's Python wrapper keeps after loading from bytes.

    The wrapper holds the bytes for good (its own comment: "This is bad as we're holding the memory
    indefinitely"), only to rebuild the session when falling back to another execution provider. We
    run on the CPU provider alone, so there is nothing to fall back to; the three models' files are
    44 MiB of resident memory otherwise. The session itself no longer needs them once built.
    """
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None


class OnnxModel:
    """One ONNX model, verified against the manifest, warmed up, ready to ``run``.

    One instance serves every camera (the agent loads each model once), and runs at most
    ``config.concurrent_runs`` inferences at a time: ONNX Runtime's memory arena keeps, for good, the
    activations of the most runs that were ever in flight at once (tens of MiB for CenterFace at
    640x384 per run), so the agent allows as many as it has inference threads (one per core), and
    no more however many cameras there are.

    ``last_latency_s`` is the wall time of the most recent :meth:`run` (for metrics); ``runs`` and
    ``total_latency_s`` count every run since load (warm-up excluded).
    """

    def __init__(
        self,
        model_id: str,
        *,
        config: RuntimeConfig | None = None,
        manifest: Manifest | None = None,
        models_dir: Path | None = None,
        path: Path | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        manifest = load_manifest() if manifest is None else manifest
        self.entry: ModelEntry = manifest.get(model_id)
        self.model_id = model_id
        self.path = path if path is not None else (models_dir or MODELS_DIR) / self.entry.file
        self.last_latency_s = 0.0
        self.total_latency_s = 0.0
        self.runs = 0
        self._runs_in_flight = threading.BoundedSemaphore(self.config.concurrent_runs)
        self.provider = "cpu"
        self.fallback_reason: str | None = None
        data = self._read_verified()
        self._session = self._create_session(data)
        del data  # the only other reference was ONNX Runtime's, dropped in _create_session
        self._check_signature()
        self.input_names = [i.name for i in self.entry.inputs]
        self.output_names = list(self.entry.outputs)
        self._warm_up()

    def _read_verified(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as err:
            raise ModelLoadError(
                f"model file {self.path} for {self.model_id!r} is missing",
                code="model_missing",
                model_id=self.model_id,
            ) from err
        except OSError as err:
            raise ModelLoadError(
                f"cannot read model file {self.path}: {err}", code="model_missing", model_id=self.model_id
            ) from err
        if self.config.verify_checksum:
            if len(data) != self.entry.size_bytes:
                raise ModelLoadError(
                    f"model file {self.path} has {len(data)} bytes, the manifest says "
                    f"{self.entry.size_bytes} (truncated or replaced)",
                    code="model_truncated",
                    model_id=self.model_id,
                )
            digest = _sha256(data)
            if digest != self.entry.sha256:
                raise ModelLoadError(
                    f"model file {self.path} has sha256 {digest}, the manifest says {self.entry.sha256}",
                    code="model_checksum",
                    model_id=self.model_id,
                )
        return data

    def _create_session(self, data: bytes) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.config.intra_op_threads
        opts.inter_op_num_threads = self.config.inter_op_threads
        parallel = self.config.inter_op_threads > 1
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = _OPT_LEVELS[self.config.graph_optimization]
        opts.log_severity_level = 3
        providers = self._choose_providers()
        try:
            # The session is built from the bytes we hashed, not from the path, so the file cannot be
            # swapped between the checksum and the load.
            try:
                session = ort.InferenceSession(
                    data,
                    sess_options=opts,
                    providers=providers,
                    provider_options=self._provider_options(providers),
                )
            except Exception as err:
                if providers == [_CPU]:
                    raise
                log.warning(
                    "model %s: execution providers %s failed to initialise (%s); running on cpu",
                    self.model_id,
                    providers,
                    err,
                )
                self.fallback_reason = f"init failed: {err}"[:200]
                session = ort.InferenceSession(data, sess_options=opts, providers=[_CPU])
        except Exception as err:  # onnxruntime raises several unrelated exception types
            raise ModelLoadError(
                f"onnxruntime cannot load {self.path}: {err}", code="model_invalid", model_id=self.model_id
            ) from err
        _release_model_bytes(session)
        self.provider = _SHORT_NAMES.get(session.get_providers()[0], session.get_providers()[0])
        return session

    def _provider_options(self, providers: list[str]) -> list[dict[str, str]]:
        """Per provider, the options that keep it to our thread budget: OpenVINO ignores the
        session's intra-op thread count and would spread one run over every core."""
        threads = str(self.config.intra_op_threads)
        return [{"num_of_threads": threads} if p == _ORT_NAMES["openvino"] else {} for p in providers]

    def _choose_providers(self) -> list[str]:
        """The configured providers this onnxruntime build has, in order, with CPU always last."""
        chosen, missing = provider_plan(self.config.execution_providers)
        for short in missing:
            log.warning(
                "model %s: execution provider %s is not in this onnxruntime build (it has %s); "
                "skipped, CPU is the last resort",
                self.model_id,
                short,
                ", ".join(ort.get_available_providers()),
            )
            self.fallback_reason = f"{short} not available"
        return [_ORT_NAMES[short] for short in chosen]

    def _check_signature(self) -> None:
        got_in = [i.name for i in self._session.get_inputs()]
        got_out = [o.name for o in self._session.get_outputs()]
        want_in = [i.name for i in self.entry.inputs]
        if sorted(got_in) != sorted(want_in) or sorted(got_out) != sorted(self.entry.outputs):
            raise ModelLoadError(
                f"model {self.model_id!r} has inputs {got_in} / outputs {got_out}, the manifest says "
                f"{want_in} / {self.entry.outputs}",
                code="model_signature",
                model_id=self.model_id,
            )

    def _warm_up(self) -> None:
        if self.config.warmup_runs == 0:
            return
        feeds = {i.name: np.zeros(i.warmup_shape, dtype=np.dtype(i.dtype)) for i in self.entry.inputs}
        started = time.perf_counter()
        for _ in range(self.config.warmup_runs):
            self._run_raw(feeds)
        log.info(
            "model %s loaded on %s and warmed up (%d runs, %.1f ms)",
            self.model_id,
            self.provider,
            self.config.warmup_runs,
            (time.perf_counter() - started) * 1e3,
        )

    def _run_raw(self, feeds: Mapping[str, npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]:
        try:
            with self._runs_in_flight:
                out = self._session.run(self.output_names, dict(feeds))
        except Exception as err:  # onnxruntime's own exception classes are not part of its typed API
            raise InferenceError(
                f"model {self.model_id!r} failed: {err}", code="inference_failed", model_id=self.model_id
            ) from err
        return [np.asarray(o) for o in out]

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying session (benches use it to time the bare runtime)."""
        return self._session

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]:
        """Run the model; outputs come back in the manifest's ``outputs`` order.

        Raises :class:`InferenceError` with code ``bad_input`` when the feed names or dtypes are wrong.
        """
        if set(feeds) != set(self.input_names):
            raise InferenceError(
                f"model {self.model_id!r} takes inputs {self.input_names}, got {sorted(feeds)}",
                code="bad_input",
                model_id=self.model_id,
            )
        for spec in self.entry.inputs:
            arr = feeds[spec.name]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(spec.dtype):
                got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
                raise InferenceError(
                    f"input {spec.name!r} of {self.model_id!r} must be {spec.dtype}, got {got}",
                    code="bad_input",
                    model_id=self.model_id,
                )
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape, strict=True)
            ):
                raise InferenceError(
                    f"input {spec.name!r} of {self.model_id!r} must have shape {spec.shape}, got {arr.shape}",
                    code="bad_input",
                    model_id=self.model_id,
                )
        started = time.perf_counter()
        out = self._run_raw(feeds)
        self.last_latency_s = time.perf_counter() - started
        self.total_latency_s += self.last_latency_s
        self.runs += 1
        return out

    def __repr__(self) -> str:
        threads = self.config.intra_op_threads
        return f"OnnxModel({self.model_id!r}, path={str(self.path)!r}, threads={threads})"

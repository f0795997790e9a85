"""Vision: ONNX Runtime model runners, the face pipeline, person detection and camera checks."""

from vision.errors import VisionError
from vision.manifest import Manifest, ManifestError, ModelEntry, load_manifest
from vision.motion import MotionConfig, MotionGate, MotionResult
from vision.runtime import InferenceError, InvalidImageError, ModelLoadError, OnnxModel, RuntimeConfig

__all__ = [
    "InferenceError",
    "InvalidImageError",
    "Manifest",
    "ManifestError",
    "ModelEntry",
    "ModelLoadError",
    "MotionConfig",
    "MotionGate",
    "MotionResult",
    "OnnxModel",
    "RuntimeConfig",
    "VisionError",
    "load_manifest",
]

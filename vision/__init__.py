"""Vision: ONNX Runtime model runners, the face pipeline, person detection and camera checks."""

from vision.errors import VisionError

__all__ = ["VisionError"]

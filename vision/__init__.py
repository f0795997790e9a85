"""Vision: ONNX Runtime model runners, the face pipeline, person detection and camera checks."""

from vision.align import AlignmentError, align_face, align_faces
from vision.errors import VisionError
from vision.face_detect import FaceDetection, FaceDetector, FaceDetectorConfig
from vision.face_embed import FaceEmbedder, FaceEmbedderConfig
from vision.face_pipeline import (
    EnrollmentError,
    EnrollmentResult,
    FaceObservation,
    FacePipeline,
    FacePipelineConfig,
    FrameAnalysis,
    decode_image,
    embed_enrollment_photo,
)
from vision.face_track import FaceTracker, FaceTrackerConfig, IdentityDecision
from vision.gallery import DEFAULT_THRESHOLDS, FaceTemplate, Gallery, GalleryError, Match
from vision.manifest import Manifest, ManifestError, ModelEntry, load_manifest
from vision.motion import MotionConfig, MotionGate, MotionResult
from vision.quality import ENROLLMENT_QUALITY, FaceQuality, QualityConfig, assess_face
from vision.runtime import InferenceError, InvalidImageError, ModelLoadError, OnnxModel, RuntimeConfig

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ENROLLMENT_QUALITY",
    "AlignmentError",
    "EnrollmentError",
    "EnrollmentResult",
    "FaceDetection",
    "FaceDetector",
    "FaceDetectorConfig",
    "FaceEmbedder",
    "FaceEmbedderConfig",
    "FaceObservation",
    "FacePipeline",
    "FacePipelineConfig",
    "FaceQuality",
    "FaceTemplate",
    "FaceTracker",
    "FaceTrackerConfig",
    "FrameAnalysis",
    "Gallery",
    "GalleryError",
    "IdentityDecision",
    "InferenceError",
    "InvalidImageError",
    "Manifest",
    "ManifestError",
    "Match",
    "ModelEntry",
    "ModelLoadError",
    "MotionConfig",
    "MotionGate",
    "MotionResult",
    "OnnxModel",
    "QualityConfig",
    "RuntimeConfig",
    "VisionError",
    "align_face",
    "align_faces",
    "assess_face",
    "decode_image",
    "embed_enrollment_photo",
    "load_manifest",
]

"""Vision: ONNX Runtime model runners, the face pipeline, person detection, zones and camera checks.

Applications import from here. Settings models are also in the leaf module :mod:`vision.config`
(pydantic only), for configuration code that must not load the runtime.
"""

from vision.align import AlignmentError, align_face, align_faces
from vision.config import (
    TAMPER_KINDS,
    CameraZones,
    FaceDetectorConfig,
    FaceEmbedderConfig,
    FacePipelineConfig,
    FaceTrackerConfig,
    LineZone,
    MotionConfig,
    PersonDetectorConfig,
    PersonPipelineConfig,
    PolygonZone,
    QualityConfig,
    RuntimeConfig,
    TamperConfig,
    TamperKind,
    TrackerConfig,
)
from vision.errors import VisionError, ZoneConfigError
from vision.face_camera import FaceCamera, FaceFrameResult, process_cameras
from vision.face_detect import FaceDetection, FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import crop_around, realistic_variants, walking_clip
from vision.face_pipeline import (
    EnrollmentError,
    EnrollmentResult,
    FaceObservation,
    FacePipeline,
    FrameAnalysis,
    decode_image,
    embed_enrollment_photo,
)
from vision.face_track import FaceTracker, IdentityDecision
from vision.gallery import DEFAULT_THRESHOLDS, FaceTemplate, Gallery, GalleryError, Match
from vision.manifest import MANIFEST_PATH, Manifest, ManifestError, ModelEntry, load_manifest
from vision.motion import MotionGate, MotionResult
from vision.person import (
    PersonDetection,
    PersonDetector,
    PersonDetectorError,
    PersonFrameResult,
    PersonPipeline,
)
from vision.quality import ENROLLMENT_QUALITY, FaceQuality, assess_face
from vision.render import draw_boxes, draw_zones, encode_jpeg, evidence_jpeg, snapshot_jpeg
from vision.runtime import InferenceError, InvalidImageError, ModelLoadError, OnnxModel, provider_plan
from vision.scenes import (
    SPRITE_HEIGHT,
    WalkerPath,
    corridor_background,
    linear_path,
    load_photo,
    person_sprite,
    walk_clip,
    write_video,
)
from vision.tamper import StreamWatch, TamperChange, TamperDetector, TamperError
from vision.tracking import Track, Tracker, TrackingError
from vision.zones import LineCrossing, ZoneEntered, ZoneJudge, ZoneLeft, ZoneObservation, in_pixels

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ENROLLMENT_QUALITY",
    "MANIFEST_PATH",
    "SPRITE_HEIGHT",
    "TAMPER_KINDS",
    "AlignmentError",
    "CameraZones",
    "EnrollmentError",
    "EnrollmentResult",
    "FaceCamera",
    "FaceDetection",
    "FaceDetector",
    "FaceDetectorConfig",
    "FaceEmbedder",
    "FaceEmbedderConfig",
    "FaceFrameResult",
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
    "LineCrossing",
    "LineZone",
    "Manifest",
    "ManifestError",
    "Match",
    "ModelEntry",
    "ModelLoadError",
    "MotionConfig",
    "MotionGate",
    "MotionResult",
    "OnnxModel",
    "PersonDetection",
    "PersonDetector",
    "PersonDetectorConfig",
    "PersonDetectorError",
    "PersonFrameResult",
    "PersonPipeline",
    "PersonPipelineConfig",
    "PolygonZone",
    "QualityConfig",
    "RuntimeConfig",
    "StreamWatch",
    "TamperChange",
    "TamperConfig",
    "TamperDetector",
    "TamperError",
    "TamperKind",
    "Track",
    "Tracker",
    "TrackerConfig",
    "TrackingError",
    "VisionError",
    "WalkerPath",
    "ZoneConfigError",
    "ZoneEntered",
    "ZoneJudge",
    "ZoneLeft",
    "ZoneObservation",
    "align_face",
    "align_faces",
    "assess_face",
    "corridor_background",
    "crop_around",
    "decode_image",
    "draw_boxes",
    "draw_zones",
    "embed_enrollment_photo",
    "encode_jpeg",
    "evidence_jpeg",
    "in_pixels",
    "linear_path",
    "load_manifest",
    "load_photo",
    "person_sprite",
    "process_cameras",
    "provider_plan",
    "realistic_variants",
    "snapshot_jpeg",
    "walk_clip",
    "walking_clip",
    "write_video",
]

"""The one root exception of the vision package, and the errors raised by its leaf modules."""

from __future__ import annotations


class VisionError(Exception):
    """Anything that went wrong in a model or an image pipeline.

    ``code`` is a short, stable, machine-readable reason used as a metric label
    (``model_checksum``, ``bad_image``, ``no_face``, ``time_backwards``...); ``camera_id`` and
    ``model_id`` name what failed where that is known (empty otherwise).
    """

    def __init__(
        self, message: str, *, code: str = "vision_error", camera_id: str = "", model_id: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.camera_id = camera_id
        self.model_id = model_id


class ZoneConfigError(VisionError):
    """A zone or line definition that cannot be used (raised where it is resolved, not by pydantic)."""

    def __init__(self, message: str, *, code: str = "bad_zone", camera_id: str = "") -> None:
        super().__init__(message, code=code, camera_id=camera_id)


__all__ = ["VisionError", "ZoneConfigError"]

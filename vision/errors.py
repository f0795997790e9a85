"""The one root exception of the vision package."""

from __future__ import annotations


class VisionError(Exception):
    """Anything that went wrong in a model or an image pipeline.

    ``code`` is a short, stable, machine-readable reason used as a metric label
    (``model_checksum``, ``bad_image``, ``no_face``...).
    """

    def __init__(self, message: str, *, code: str = "vision_error") -> None:
        super().__init__(message)
        self.code = code

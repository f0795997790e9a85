"""Evaluation helpers: realistic variants of a photo, face crops, synthetic clips, distance summaries.

No labelled face set with several photos per person ships in any package we can install, so the
accuracy tests and ``bench/bench_face_accuracy.py`` build positives from one photo under realistic
changes (scale, blur, JPEG, brightness, small rotation) and use other people as negatives. Kept in the
library so a site can re-run the same calibration on its own photos.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[Any]  # uint8 BGR; Any because OpenCV results are not precisely typed


def crop_around(image: Image, box: tuple[float, float, float, float], margin: float = 1.0) -> Image:
    """The box grown by ``margin`` box sizes on every side (clipped to the image), as a copy:
    roughly a head-and-shoulders photo, the way an operator would cut an enrollment picture."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    ih, iw = image.shape[:2]
    cx1, cy1 = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
    cx2, cy2 = int(min(iw, x2 + margin * w)), int(min(ih, y2 + margin * h))
    return np.ascontiguousarray(image[cy1:cy2, cx1:cx2])


def subject_centre(
    image: Image, box: tuple[float, float, float, float], margin: float = 1.0
) -> tuple[float, float]:
    """Where the centre of ``box`` lies in ``crop_around(image, box, margin)``: the crop is clipped
    at the image's edges, so its face is not always in the middle."""
    x1, y1, x2, y2 = box
    left, top = int(max(0, x1 - margin * (x2 - x1))), int(max(0, y1 - margin * (y2 - y1)))  # as it cuts
    return (x1 + x2) / 2 - left, (y1 + y2) / 2 - top


def jpeg_roundtrip(image: Image, quality: int) -> Image:
    """``image`` as a camera's JPEG at ``quality`` gives it back (block artefacts, lost detail)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)


def rotated(image: Image, degrees: float) -> Image:
    """``image`` turned by ``degrees`` about its centre, the edges reflected (a tilted head)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.asarray(cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT), dtype=np.uint8)


def enrollment_photos(crop: Image, tight: Image) -> dict[str, Image]:
    """Three enrollment "photos" of one face, made from one real photo because we ship one per person,
    each chosen to be unlike the probes the benches make (grey-level exposure, tilts of 6° and more,
    classroom sizes, JPEG 40):

    - ``crop``: the head-and-shoulders ID photo the school has (``crop_around``, margin 1);
    - ``warm light, tilted 4°``: another day in another room: a warm colour cast, the head tilted 4°;
    - ``from further away``: taken further back on a phone: 0.6 of the size, JPEG 80.

    ``tight`` is a tighter crop of the same face (margin 0.6): at 0.6 of the size the wide crop
    shows a neighbour large enough for the enrollment gate to refuse it as ``several_faces``, and a
    school's photographer takes the pupil alone.
    """
    warm = np.clip(tight.astype(np.float32) * np.array([0.85, 1.0, 1.1], np.float32), 0, 255)  # BGR
    further = np.asarray(cv2.resize(tight, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA), np.uint8)
    return {
        "crop": crop,
        "warm light, tilted 4°": rotated(warm.astype(np.uint8), 4),
        "from further away": jpeg_roundtrip(further, 80),
    }


def realistic_variants(image: Image) -> dict[str, Image]:
    """Named variants a camera could plausibly produce of the same face photo.

    Scale down to a quarter (a face across the classroom), up 1.5x, Gaussian blur (focus, motion) of
    sigma 1 and 2, JPEG quality 20/40/70, darker, brighter and lower-contrast exposure, rotation by
    ±6 and ±12 degrees.
    """
    out: dict[str, Image] = {}
    for s in (0.25, 0.5, 1.5):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out[f"scale_{s:g}"] = np.asarray(cv2.resize(image, None, fx=s, fy=s, interpolation=interp), np.uint8)
    for sigma in (1.0, 2.0):
        out[f"blur_{sigma:g}"] = np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), np.uint8)
    for q in (20, 40, 70):
        out[f"jpeg_{q}"] = jpeg_roundtrip(image, q)
    for name, alpha, beta in (("darker", 0.7, -10), ("brighter", 1.0, 40), ("flat", 0.6, 50)):
        out[f"exposure_{name}"] = np.asarray(cv2.convertScaleAbs(image, alpha=alpha, beta=beta), np.uint8)
    for deg in (-12, -6, 6, 12):
        out[f"rotate_{deg}"] = rotated(image, deg)
    return out


def composite(background: Image, patch: Image, center: tuple[float, float]) -> Image:
    """``patch`` pasted onto a copy of ``background`` at ``center`` through a soft elliptical mask,
    so there is no hard rectangular edge for the detector to latch on to."""
    out = background.copy()
    ph, pw = patch.shape[:2]
    bh, bw = background.shape[:2]
    x0, y0 = round(center[0] - pw / 2), round(center[1] - ph / 2)
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(bw, x0 + pw), min(bh, y0 + ph)
    if dx1 <= dx0 or dy1 <= dy0:
        return out
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (pw // 2, ph // 2), (int(pw * 0.46), int(ph * 0.48)), 0, 0, 360, 1.0, -1)
    soft = np.asarray(cv2.GaussianBlur(mask, (0, 0), max(1.0, min(pw, ph) * 0.04)), np.float32)[:, :, None]
    src = patch[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0].astype(np.float32)
    m = soft[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
    dst = out[dy0:dy1, dx0:dx1].astype(np.float32)
    out[dy0:dy1, dx0:dx1] = np.clip(m * src + (1 - m) * dst, 0, 255).astype(np.uint8)
    return out


def walking_clip(
    background: Image,
    patches: Sequence[Image],
    *,
    frames: int,
    paths: Sequence[tuple[tuple[float, float], tuple[float, float]]],
    blur_frames: Sequence[int] = (),
    still_frames: int = 0,
) -> Iterator[Image]:
    """Frames of ``patches`` (head-and-shoulders crops) moving in straight lines over ``background``.

    ``paths[i]`` is patch i's (start, end) centre. Frames listed in ``blur_frames`` get a strong motion
    blur (a bad frame in the middle of a walk). ``still_frames`` unchanged background frames come
    first, as a camera sees an empty room before people walk in.
    """
    for _ in range(still_frames):
        yield background.copy()
    for k in range(frames):
        t = k / max(1, frames - 1)
        frame = background
        for patch, ((x0, y0), (x1, y1)) in zip(patches, paths, strict=True):
            frame = composite(frame, patch, (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
        if k in blur_frames:
            kernel = np.zeros((1, 31), np.float32)
            kernel[0, :] = 1 / 31
            frame = np.asarray(cv2.filter2D(frame, -1, kernel), np.uint8)
        yield frame


def distance_summary(distances: npt.ArrayLike) -> dict[str, Any]:
    """n, min, 5th/50th/95th percentile and max of a set of distances (for the accuracy report)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(d, [5, 50, 95])
    return {
        "n": int(d.size),
        "min": float(d.min()),
        "p5": float(p5),
        "median": float(p50),
        "p95": float(p95),
        "max": float(d.max()),
    }

"""Evidence pictures: one module draws boxes and zones and encodes the small JPEG of an alert."""

from __future__ import annotations

import cv2
import numpy as np

from vision import CameraZones, PolygonZone, encode_jpeg, evidence_jpeg, snapshot_jpeg


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


def test_jpeg_is_scaled_to_the_max_width_keeping_the_aspect() -> None:
    frame = np.full((720, 1280, 3), 90, np.uint8)
    small = decode(encode_jpeg(frame, max_width=640))
    assert small.shape == (360, 640, 3)
    assert decode(encode_jpeg(frame[:100, :200], max_width=640)).shape == (100, 200, 3)  # never enlarged


def near(image: np.ndarray, y: int, x: int) -> np.ndarray:
    """The brightest value per channel around (x, y): JPEG smears a thin line over its neighbours."""
    return np.asarray(image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).max(axis=0), dtype=int)


def test_snapshot_draws_the_box_and_leaves_the_frame_alone() -> None:
    frame = np.full((600, 900, 3), 128, np.uint8)
    data = snapshot_jpeg(frame, (150.0, 120.0, 450.0, 540.0), max_width=900)
    assert data[:2] == b"\xff\xd8" and (frame == 128).all()
    image = decode(data)
    assert near(image, 330, 150)[2] > 200  # the box's left edge is red (BGR)
    assert np.abs(image[330, 300].astype(int) - 128).max() < 12  # inside the box untouched


def test_evidence_draws_zones_and_labelled_boxes() -> None:
    frame = np.zeros((600, 1200, 3), np.uint8)
    zones = CameraZones(
        camera_id="cam1",
        zones=[
            PolygonZone(id="z", coords="normalized", points=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.9), (0.1, 0.9)])
        ],
    )
    plain = decode(evidence_jpeg(frame, max_width=1200))
    box = (600.0, 150.0, 900.0, 450.0)
    drawn = decode(evidence_jpeg(frame, zones=zones, boxes=[(box, "#3")], max_width=1200))
    assert plain.max() < 20
    zone_edge = near(drawn, 300, 120)
    assert zone_edge[1] > 150 and zone_edge[2] > 150  # the zone's left edge, yellow
    assert near(drawn, 300, 600)[2] > 150  # the box, red
    assert (drawn[100:146, 600:660] > 60).any()  # its label above it

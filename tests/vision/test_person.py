"""NanoDet person detection: pure pre/post-processing on synthetic arrays, then the real model on photos."""

from __future__ import annotations

import numpy as np
import pytest
from scene_clips import defocus, shared_person_detector

from vision.config import PersonDetectorConfig
from vision.person import (
    INPUT_SIZE,
    MEAN_BGR,
    REG_BINS,
    STD_BGR,
    Letterbox,
    PersonDetector,
    PersonDetectorError,
    decode_level,
    letterbox,
    nms,
    postprocess,
    preprocess,
    split_outputs,
)
from vision.render import draw_boxes
from vision.runtime import InvalidImageError
from vision.scenes import SPRITE_HEIGHT, corridor_background, load_photo, paste_person, person_sprite


def test_letterbox_keeps_aspect_and_centres() -> None:
    frame = np.full((100, 200, 3), 255, np.uint8)
    canvas, lb = letterbox(frame)
    assert canvas.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert lb.scale == pytest.approx(INPUT_SIZE / 200)
    assert lb.pad_x == 0 and lb.pad_y == (INPUT_SIZE - 208) // 2
    # The picture is white, the bands above and below are the mean colour.
    assert (canvas[lb.pad_y + 1 : lb.pad_y + 207] == 255).all()
    assert (canvas[0] == np.round(MEAN_BGR)).all() and (canvas[-1] == np.round(MEAN_BGR)).all()


def test_preprocess_normalises_bgr_per_channel() -> None:
    # A frame whose B, G, R are exactly mean + std: every pixel of the picture becomes (1, 1, 1).
    value = np.round(MEAN_BGR + STD_BGR).astype(np.uint8)
    frame = np.broadcast_to(value, (INPUT_SIZE, INPUT_SIZE, 3)).copy()
    x, lb = preprocess(frame)
    assert x.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32
    expected = (value.astype(np.float32) - MEAN_BGR) / STD_BGR
    np.testing.assert_allclose(x[0, :, 10, 10], expected, rtol=1e-5)
    assert lb == Letterbox(1.0, 0, 0, INPUT_SIZE, INPUT_SIZE)
    # Padding is zero after normalisation (within rounding of the mean to uint8).
    x2, lb2 = preprocess(np.zeros((INPUT_SIZE // 2, INPUT_SIZE, 3), np.uint8))
    assert np.abs(x2[0, :, 0, 0]).max() < 0.01
    assert x2[0, 0, lb2.pad_y + 5, 5] == pytest.approx(-MEAN_BGR[0] / STD_BGR[0], rel=1e-5)


def _one_hot_dist(sides: tuple[int, int, int, int]) -> np.ndarray:
    # Logits that put (almost) all probability on the given bin of each side.
    logits = np.full((4, REG_BINS), -30.0, np.float32)
    for s, b in enumerate(sides):
        logits[s, b] = 30.0
    return logits.reshape(-1)


def test_decode_level_recovers_a_known_box() -> None:
    grid, stride = 13, 32
    cls = np.zeros((grid * grid, 80), np.float32)
    reg = np.zeros((grid * grid, 4 * REG_BINS), np.float32)
    cell = 5 * grid + 7  # row 5, column 7 → cell corner (224, 160)
    cls[cell, 0] = 0.9
    cls[cell + 1, 3] = 0.99  # a confident car must not come out as a person
    reg[cell] = _one_hot_dist((2, 3, 1, 4))
    boxes, scores = decode_level(cls, reg, stride, 0.6)
    assert scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(boxes[0], [224 - 64, 160 - 96, 224 + 32, 160 + 128], atol=1e-3)


def test_decode_level_expected_value_between_bins() -> None:
    # Equal logits on bins 2 and 3: expected distance 2.5 bins.
    logits = np.full((4, REG_BINS), -30.0, np.float32)
    logits[:, 2] = logits[:, 3] = 5.0
    cls = np.zeros((52 * 52, 80), np.float32)
    cls[0, 0] = 0.7
    reg = np.zeros((52 * 52, 4 * REG_BINS), np.float32)
    reg[0] = logits.reshape(-1)
    boxes, _ = decode_level(cls, reg, 8, 0.6)
    np.testing.assert_allclose(boxes[0], [-20, -20, 20, 20], atol=1e-3)


def test_decode_level_rejects_wrong_shapes() -> None:
    with pytest.raises(PersonDetectorError):
        decode_level(np.zeros((170, 80), np.float32), np.zeros((170, 44), np.float32), 32, 0.5)
    with pytest.raises(PersonDetectorError):
        decode_level(np.zeros((169, 80), np.float32), np.zeros((169, 40), np.float32), 32, 0.5)


def test_nms_drops_overlaps_keeps_separate() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.7, 0.9, 0.8, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 2, 0, 3]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


def test_postprocess_scales_back_to_the_frame() -> None:
    # A 832x416 frame is letterboxed at scale 0.5 with 104 px bands above and below.
    _, lb = letterbox(np.zeros((416, 832, 3), np.uint8))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0, 104)
    levels = {}
    for stride in (8, 16, 32):
        n = INPUT_SIZE // stride
        levels[stride] = (np.zeros((n * n, 80), np.float32), np.zeros((n * n, 44), np.float32))
    cls, reg = levels[16]
    cell = 10 * 26 + 10  # corner (160, 160) in model pixels
    cls[cell, 0] = 0.95
    reg[cell] = _one_hot_dist((1, 2, 3, 4))  # → model box (144, 128, 208, 224)
    dets = postprocess(levels, lb)
    assert len(dets) == 1
    assert dets[0].box == pytest.approx((288.0, 48.0, 416.0, 240.0))
    assert dets[0].bottom_centre == pytest.approx((352.0, 240.0))


def test_split_outputs_pairs_by_grid_and_rejects_others() -> None:
    outs = [np.zeros((1, (416 // s) ** 2, c), np.float32) for s in (32, 8, 16) for c in (44, 80)]
    levels = split_outputs(outs)
    assert sorted(levels) == [8, 16, 32]
    assert levels[8][0].shape == (2704, 80) and levels[8][1].shape == (2704, 44)
    with pytest.raises(PersonDetectorError):
        split_outputs(outs[:-1])
    with pytest.raises(PersonDetectorError):
        split_outputs([*outs, np.zeros((1, 169, 7), np.float32)])


# Real model from here on.


@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    return shared_person_detector()


@pytest.mark.parametrize("photo", ["human_samples.jpg", "sample1.jpg", "sample3.jpg", "sample5.jpg"])
def test_photos_with_people_give_person_boxes(detector: PersonDetector, photo: str) -> None:
    frame = load_photo(photo)
    dets = detector.detect(frame)
    assert dets, f"no person found in {photo}"
    h, w = frame.shape[:2]
    for d in dets:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert d.score >= detector.config.score_threshold
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


@pytest.mark.parametrize("who", ["figure", "diner"])
def test_composited_person_is_found_where_it_was_pasted(detector: PersonDetector, who: str) -> None:
    frame = corridor_background()
    truth = paste_person(frame, person_sprite(who), (640.0, 650.0), SPRITE_HEIGHT[who])
    assert truth is not None
    dets = detector.detect(frame)
    assert len(dets) == 1
    x1, y1, x2, y2 = dets[0].box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # The person is inside the pasted crop (which also holds some of the photo's background).
    assert truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]
    assert x1 >= truth[0] - 20 and x2 <= truth[2] + 20 and y2 <= truth[3] + 20


def test_frames_without_people_give_none(detector: PersonDetector) -> None:
    assert detector.detect(corridor_background(seed=3)) == []
    assert detector.detect(np.full((720, 1280, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    # The lamps and ceiling of the group photo, without the people below them, heavily blurred.
    ceiling = load_photo("human_samples.jpg")[200:330, 200:1280]
    assert detector.detect(defocus(np.ascontiguousarray(ceiling), 8.0)) == []


def test_grayscale_frame_is_accepted(detector: PersonDetector) -> None:
    frame = corridor_background()
    paste_person(frame, person_sprite("diner"), (640.0, 650.0), 400.0)
    gray = np.ascontiguousarray(frame.mean(axis=2).astype(np.uint8))
    assert isinstance(detector.detect(gray), list)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (np.zeros((480, 640, 3), np.float32), "bad_frame"),
        (np.zeros((480, 640, 4), np.uint8), "bad_frame"),
        (np.zeros((0, 640, 3), np.uint8), "empty_image"),
        (np.zeros((4, 4, 3), np.uint8), "bad_frame"),
        ("not an image", "bad_frame"),
    ],
)
def test_bad_frames_are_specific_counted_errors(detector: PersonDetector, frame: object, code: str) -> None:
    before = detector.bad_frames
    with pytest.raises(InvalidImageError) as err:
        detector.detect(frame)  # type: ignore[arg-type]
    assert err.value.code == code
    assert detector.bad_frames == before + 1


def test_threshold_is_configurable() -> None:
    base = shared_person_detector()
    strict = PersonDetector(PersonDetectorConfig(score_threshold=0.99), model=base.model)
    frame = load_photo("sample5.jpg")
    assert base.detect(frame) and strict.detect(frame) == []


def test_draw_boxes_marks_boxes_on_a_copy() -> None:
    frame = np.full((200, 300, 3), 128, np.uint8)
    out = draw_boxes(frame, [((50.0, 40.0, 150.0, 180.0), "track 3")])
    assert (frame == 128).all()  # the original is untouched
    assert tuple(out[110, 50]) == (0, 0, 255) and tuple(out[40, 100]) == (0, 0, 255)  # edges, red in BGR
    assert (out[110, 100] == 128).all()  # inside the box is untouched
    assert (out[20:36, 50:120] != 128).any()  # the label above the box


@pytest.mark.parametrize("size", [(1280, 720), (640, 480), (480, 800), (416, 416), (1000, 37), (9, 700)])
def test_preprocess_is_the_letterbox_canvas_normalised_bit_for_bit(size: tuple[int, int]) -> None:
    """The tensor is made without the canvas (the border filled with its constant): it must be
    exactly the canvas, normalised, channel-planar."""
    w, h = size
    rng = np.random.default_rng(w * h)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    canvas, lb = letterbox(frame)
    reference = np.empty((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for c in range(3):
        np.multiply(canvas[:, :, c], np.float32(1.0) / STD_BGR[c], out=reference[0, c], casting="unsafe")
        reference[0, c] += -MEAN_BGR[c] / STD_BGR[c]
    x, lb2 = preprocess(frame)
    assert lb2 == lb
    assert x.dtype == np.float32 and x.shape == reference.shape
    assert np.array_equal(x, reference)

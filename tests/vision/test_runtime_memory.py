"""What a loaded model keeps in memory, and that one model serves several threads one run at a time
(ONNX Runtime's arena keeps the activations of the most runs ever in flight at once)."""

from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any

import numpy as np

from vision.runtime import OnnxModel

MODEL_ID = "centerface"  # the smallest file: the test loads it on its own


def test_a_loaded_model_keeps_no_copy_of_its_file() -> None:
    tracemalloc.start()
    try:
        model = OnnxModel(MODEL_ID)
        held = [s.size for s in tracemalloc.take_snapshot().statistics("lineno")]
    finally:
        tracemalloc.stop()
    # Python read the file into one block; ONNX Runtime's wrapper used to keep it for the life of the
    # session (44 MiB for the three models).
    assert max(held) < model.entry.size_bytes // 2
    (out, *_) = model.run({"input.1": np.zeros(model.entry.inputs[0].warmup_shape, np.float32)})
    assert out.size > 0  # the session runs without the bytes


class CountingSession:
    """The real session, counting the runs in flight at once."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def run(self, *args: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.005)  # widen the window two unserialised runs would share
            return self._session.run(*args)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_one_model_shared_by_cameras_runs_one_inference_at_a_time() -> None:
    model = OnnxModel(MODEL_ID)
    counting = CountingSession(model.session)
    model._session = counting  # the real session, observed
    rng = np.random.default_rng(1)
    feeds = [rng.uniform(0, 255, (1, 3, 96, 160)).astype(np.float32) for _ in range(4)]
    expected = [model.session._session.run(None, {"input.1": x})[0] for x in feeds]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(feeds))}
    start = threading.Barrier(len(feeds))

    def camera(i: int) -> None:
        start.wait()
        for _ in range(5):
            results[i].append(model.run({"input.1": feeds[i]})[0])

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.most_in_flight == 1
    for i, outs in results.items():  # each camera got its own frame's result, every time
        assert len(outs) == 5 and all(np.array_equal(o, expected[i]) for o in outs)

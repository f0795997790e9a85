"""Gallery: open-set top-1 matching, model tags, add/remove, bad embeddings; vectorised == brute force."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vision.gallery import DEFAULT_THRESHOLDS, FaceTemplate, Gallery, GalleryError

MODEL = "dlib_resnet_v1"


def _unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return np.asarray(v / np.linalg.norm(v, axis=1, keepdims=True), np.float32)


def test_open_set_never_returns_nearest_name_beyond_threshold() -> None:
    rng = np.random.default_rng(0)
    people = _unit(rng, 3)
    g = Gallery(MODEL)
    for i, e in enumerate(people):
        g.add(f"p{i}", e, model_id=MODEL)
    thr = g.threshold
    near = people[1] + _unit(rng, 1)[0] * (thr * 0.5)
    far = people[1] + _unit(rng, 1)[0] * (thr * 1.5)
    m_near, m_far = g.match(np.stack([near, far]))
    assert m_near.person_id == "p1" and m_near.distance < thr
    assert m_far.person_id is None and m_far.distance > thr  # p1 is still the nearest, but too far
    # A stricter camera threshold turns the near face unknown too.
    assert g.match(near, threshold=m_near.distance * 0.9)[0].person_id is None


def test_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    g = Gallery(MODEL, threshold=1.2)
    templates = _unit(rng, 500)
    owners = [f"p{i % 200}" for i in range(500)]  # several templates per person
    for owner, t in zip(owners, templates, strict=True):
        g.add(owner, t, model_id=MODEL)
    assert len(g) == 200 and g.template_count == 500
    queries = templates[rng.choice(500, 40)] + rng.normal(scale=0.05, size=(40, 128)).astype(np.float32)
    for q, m in zip(queries, g.match(queries), strict=True):
        d = np.linalg.norm(templates - q, axis=1)
        best = int(np.argmin(d))
        assert m.distance == pytest.approx(float(d[best]), abs=1e-4)
        assert m.person_id == (owners[best] if d[best] < 1.2 else None)


def test_model_id_mismatch_is_refused() -> None:
    g = Gallery(MODEL)
    emb = np.zeros(128, np.float32)
    with pytest.raises(GalleryError) as info:
        g.add("p", emb, model_id="some_other_embedder_v2")
    assert info.value.code == "model_mismatch"
    with pytest.raises(GalleryError) as info:
        g.add_template(FaceTemplate("p", "dlib_resnet_v2", emb))
    assert info.value.code == "model_mismatch"
    assert len(g) == 0
    assert g.add_template(FaceTemplate("p", MODEL, emb)) == 1


def test_remove_and_multiple_templates() -> None:
    rng = np.random.default_rng(2)
    a, b, c = _unit(rng, 3)
    g = Gallery(MODEL)
    assert g.add("a", np.stack([a, a * 0.99]), model_id=MODEL) == 2
    g.add("b", b, model_id=MODEL)
    g.add("c", c, model_id=MODEL)
    assert g.remove("a") == 2
    assert g.remove("a") == 0
    assert "a" not in g and g.persons == ("b", "c")
    # indices shifted correctly after removing the first person
    assert [m.person_id for m in g.match(np.stack([b, c, a]))] == ["b", "c", None]
    assert g.nearest_person(b, exclude="b")[0] == "c"  # type: ignore[index]


def test_bad_embeddings_and_thresholds() -> None:
    g = Gallery(MODEL)
    for bad in (np.zeros(64), np.full(128, np.nan), np.zeros((2, 2, 128))):
        with pytest.raises(GalleryError) as info:
            g.add("p", bad, model_id=MODEL)
        assert info.value.code == "bad_embedding"
    with pytest.raises(GalleryError):
        g.match(np.zeros(3))
    with pytest.raises(GalleryError):
        g.match([[0.1] * 128, [0.2] * 64])  # type: ignore[arg-type]
    with pytest.raises(GalleryError):
        g.add("p", ["a"] * 128, model_id=MODEL)  # type: ignore[arg-type]
    with pytest.raises(GalleryError) as info:
        Gallery("unknown_model")
    assert info.value.code == "no_threshold"
    assert Gallery("unknown_model", threshold=0.3).threshold == 0.3
    assert Gallery(MODEL).threshold == DEFAULT_THRESHOLDS[MODEL]
    assert Gallery(MODEL).match(np.zeros(128))[0].person_id is None  # empty gallery


def test_concurrent_adds_and_matches() -> None:
    rng = np.random.default_rng(3)
    people = _unit(rng, 400)
    g = Gallery(MODEL)
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        for i in range(start, 400, 4):
            g.add(f"p{i}", people[i], model_id=MODEL)

    def reader() -> None:
        try:
            for _ in range(200):
                for m in g.match(people[:5]):
                    assert m.person_id in (None, "p0", "p1", "p2", "p3", "p4")
        except BaseException as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)] + [
        threading.Thread(target=reader)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(g) == 400
    assert [m.person_id for m in g.match(people)] == [f"p{i}" for i in range(400)]


def test_add_many_equals_add() -> None:
    rng = np.random.default_rng(4)
    emb = _unit(rng, 300)
    ids = [f"p{i % 120}" for i in range(300)]
    bulk, single = Gallery(MODEL, threshold=1.0), Gallery(MODEL, threshold=1.0)
    bulk.add("p5", emb[5], model_id=MODEL)  # a person already present before the bulk load
    single.add("p5", emb[5], model_id=MODEL)
    bulk.add_many(ids, emb, model_id=MODEL)
    for pid, e in zip(ids, emb, strict=True):
        single.add(pid, e, model_id=MODEL)
    assert bulk.persons == single.persons and bulk.template_count == single.template_count == 301
    queries = emb[::7] + 0.01
    assert bulk.match(queries) == single.match(queries)
    with pytest.raises(GalleryError) as info:
        bulk.add_many(["x"], emb[:1], model_id="other")
    assert info.value.code == "model_mismatch"
    with pytest.raises(GalleryError):
        bulk.add_many(["x", "y"], emb[:1], model_id=MODEL)

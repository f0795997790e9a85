"""The gallery's enrollment checks and the consent-filtered view cameras match against."""

from __future__ import annotations

import numpy as np

from vision.gallery import Gallery

MODEL = "dlib_resnet_v1"


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_own_and_nearest_other_person() -> None:
    rng = np.random.default_rng(3)
    a, b, c = _unit(rng, 2), _unit(rng, 1), _unit(rng, 1)
    g = Gallery(MODEL)
    assert g.own_and_nearest_other(a[0], "a") == (None, None)
    g.add("a", a, model_id=MODEL)
    g.add("b", b, model_id=MODEL)
    g.add("c", c, model_id=MODEL)
    own, other = g.own_and_nearest_other(a[1], "a")
    assert own is not None and own < 1e-3  # one of a's own templates
    assert other is not None
    expected = min(
        (("b", float(np.linalg.norm(a[1] - b[0]))), ("c", float(np.linalg.norm(a[1] - c[0])))),
        key=lambda x: x[1],
    )
    assert other[0] == expected[0] and abs(other[1] - expected[1]) < 1e-4
    # A person not in the gallery: no own distance, the nearest of everyone.
    own, other = g.own_and_nearest_other(b[0], "nobody")
    assert own is None and other is not None and other[0] == "b" and other[1] < 1e-3
    # Only the person themself: nobody else to be confused with.
    solo = Gallery(MODEL)
    solo.add("a", a, model_id=MODEL)
    assert solo.own_and_nearest_other(a[0], "a")[1] is None


def test_subset_keeps_only_the_admitted_persons_and_matches_like_the_whole() -> None:
    rng = np.random.default_rng(4)
    vectors = {p: _unit(rng, 2) for p in ("a", "b", "c", "d")}
    g = Gallery(MODEL)
    for p, v in vectors.items():
        g.add(p, v, model_id=MODEL)
    view = g.subset(lambda p: p in {"b", "d"})
    assert view.persons == ("b", "d") and view.template_count == 4 and view.threshold == g.threshold
    assert [
        m.person_id for m in view.match(np.stack([vectors["b"][1], vectors["d"][0], vectors["a"][0]]))
    ] == [
        "b",
        "d",
        None,  # a is in the whole gallery, not in the view: unknown, never a wrong name
    ]
    assert g.template_count == 8  # the whole is untouched
    assert len(g.subset(lambda p: False)) == 0

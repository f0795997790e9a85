"""Gallery of enrolled face templates: vectorised open-set top-1 matching.

A face is given a name only when its nearest template is closer than the model's threshold; farther
than that from everyone it is unknown, never "the nearest name". Templates are tagged with the model
id that produced them and a template of another model is refused, never compared: distances of two
different embedders mean nothing to each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vision.errors import VisionError

DEFAULT_THRESHOLDS: dict[str, float] = {
    # dlib's own rule is 0.6 (tuned on LFW). On our scene photos several pairs of different young women
    # fall between 0.57 and 0.60, so 0.6 would name strangers; the same face under realistic changes
    # stays below 0.35 and different photos of one person at 0.36-0.45 (MODELS.md). 0.5 sits between;
    # the measured distributions are in docs/FACE_ACCURACY.md.
    "dlib_resnet_v1": 0.50,
}


class GalleryError(VisionError):
    """A template or query the gallery cannot use.

    Codes: ``model_mismatch`` (template of another model), ``bad_embedding`` (wrong shape, not finite),
    ``no_threshold`` (no threshold known for the model).
    """

    def __init__(self, message: str, *, code: str = "bad_embedding") -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class FaceTemplate:
    """One stored embedding of one person, tagged with the model that produced it."""

    person_id: str
    model_id: str
    embedding: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Match:
    """Result of matching one face.

    ``person_id`` is None for an unknown face. ``distance`` is the distance to the nearest template
    whether or not it was accepted (useful as a confidence and for tuning), and ``threshold`` the
    threshold it was held against.
    """

    person_id: str | None
    distance: float
    threshold: float
    model_id: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    # Immutable arrays swapped as a whole under the lock, so matching never sees a half-applied change
    # and never needs the lock itself.
    embeddings: npt.NDArray[np.float32]  # (M, D)
    sq_norms: npt.NDArray[np.float32]  # (M,)
    owner: npt.NDArray[np.int64]  # (M,) index into persons
    persons: tuple[str, ...]


class Gallery:
    """Templates of one embedding model. Matching is thread-safe; changes are serialised by a lock."""

    def __init__(self, model_id: str, *, threshold: float | None = None, dim: int = 128) -> None:
        if threshold is None:
            if model_id not in DEFAULT_THRESHOLDS:
                raise GalleryError(
                    f"no default threshold for model {model_id!r}; pass one", code="no_threshold"
                )
            threshold = DEFAULT_THRESHOLDS[model_id]
        if not threshold > 0:
            raise GalleryError(f"threshold must be positive, got {threshold}", code="no_threshold")
        self.model_id = model_id
        self.threshold = float(threshold)
        self.dim = dim
        self._lock = threading.Lock()
        self._snap = _Snapshot(
            np.zeros((0, dim), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), ()
        )

    def _check(self, embeddings: npt.NDArray[Any] | Iterable[float]) -> npt.NDArray[np.float32]:
        try:
            arr = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as err:  # ragged lists, strings, None
            raise GalleryError(f"embeddings are not a numeric array: {err}") from err
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise GalleryError(f"embeddings must be (N, {self.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise GalleryError("embeddings contain NaN or infinity")
        return arr

    def add(self, person_id: str, embeddings: npt.NDArray[Any], *, model_id: str) -> int:
        """Add one (D,) or several (N, D) templates for ``person_id``; returns the person's template count.

        ``model_id`` must be this gallery's model, else :class:`GalleryError` ``model_mismatch``.
        """
        if model_id != self.model_id:
            raise GalleryError(
                f"template for {person_id!r} comes from model {model_id!r}, this gallery holds "
                f"{self.model_id!r}: re-embed the person's photos with {self.model_id!r}",
                code="model_mismatch",
            )
        if not person_id:
            raise GalleryError("person_id must not be empty", code="bad_person")
        arr = self._check(embeddings)
        with self._lock:
            snap = self._snap
            persons = snap.persons
            if person_id in persons:
                idx = persons.index(person_id)
            else:
                idx = len(persons)
                persons = (*persons, person_id)
            emb = np.vstack([snap.embeddings, arr])
            owner = np.concatenate([snap.owner, np.full(len(arr), idx, np.int64)])
            self._snap = _Snapshot(emb, np.einsum("ij,ij->i", emb, emb), owner, persons)
            return int(np.count_nonzero(owner == idx))

    def add_many(self, person_ids: Sequence[str], embeddings: npt.NDArray[Any], *, model_id: str) -> None:
        """Bulk load: row i of ``embeddings`` (N, D) is a template of ``person_ids[i]``.

        One rebuild for the whole batch; loading a roster of 100,000 people through :meth:`add` would
        copy the matrix once per person.
        """
        if model_id != self.model_id:
            raise GalleryError(
                f"templates come from model {model_id!r}, this gallery holds {self.model_id!r}",
                code="model_mismatch",
            )
        arr = self._check(embeddings)
        if len(person_ids) != len(arr):
            raise GalleryError(f"{len(person_ids)} person ids for {len(arr)} embeddings")
        if not all(person_ids):
            raise GalleryError("person_id must not be empty", code="bad_person")
        with self._lock:
            snap = self._snap
            index = {p: i for i, p in enumerate(snap.persons)}
            persons = list(snap.persons)
            owners = np.empty(len(arr), np.int64)
            for row, pid in enumerate(person_ids):
                idx = index.get(pid)
                if idx is None:
                    idx = index[pid] = len(persons)
                    persons.append(pid)
                owners[row] = idx
            emb = np.vstack([snap.embeddings, arr])
            owner = np.concatenate([snap.owner, owners])
            self._snap = _Snapshot(emb, np.einsum("ij,ij->i", emb, emb), owner, tuple(persons))

    def add_template(self, template: FaceTemplate) -> int:
        """Add a tagged template (e.g. from the roster); refused if it is of another model."""
        return self.add(template.person_id, template.embedding, model_id=template.model_id)

    def remove(self, person_id: str) -> int:
        """Delete every template of ``person_id``; returns how many were deleted (0 if none)."""
        with self._lock:
            snap = self._snap
            if person_id not in snap.persons:
                return 0
            idx = snap.persons.index(person_id)
            keep = snap.owner != idx
            removed = int(np.count_nonzero(~keep))
            persons = snap.persons[:idx] + snap.persons[idx + 1 :]
            owner = snap.owner[keep]
            owner = np.where(owner > idx, owner - 1, owner)
            emb = snap.embeddings[keep]
            self._snap = _Snapshot(emb, snap.sq_norms[keep], owner, persons)
            return removed

    def subset(self, keep: Callable[[str], bool]) -> Gallery:
        """A new gallery (same model and threshold) with the templates of the persons ``keep`` admits."""
        snap = self._snap
        out = Gallery(self.model_id, threshold=self.threshold, dim=self.dim)
        kept = [i for i, p in enumerate(snap.persons) if keep(p)]
        if not kept:
            return out
        rows = np.isin(snap.owner, kept)
        remap = np.full(len(snap.persons), -1, np.int64)
        remap[kept] = np.arange(len(kept))
        out._snap = _Snapshot(
            snap.embeddings[rows],
            snap.sq_norms[rows],
            remap[snap.owner[rows]],
            tuple(snap.persons[i] for i in kept),
        )
        return out

    def own_and_nearest_other(
        self, embedding: npt.NDArray[Any], person_id: str
    ) -> tuple[float | None, tuple[str, float] | None]:
        """``(own, other)``: the distance from ``embedding`` to ``person_id``'s nearest template (None
        without one) and the closest other person with their distance (None when there is nobody
        else), whatever the threshold. For the enrollment checks; one pass, no copy of the gallery.
        """
        query = self._check(embedding)[0]
        snap = self._snap
        if not len(snap.owner):
            return None, None
        d2 = float(query @ query) + snap.sq_norms - 2.0 * (snap.embeddings @ query)
        dist = np.sqrt(np.maximum(d2, 0.0))
        best = np.full(len(snap.persons), np.inf)
        np.minimum.at(best, snap.owner, dist)
        own: float | None = None
        if person_id in snap.persons:
            idx = snap.persons.index(person_id)
            own = float(best[idx])
            best[idx] = np.inf
        nearest = int(np.argmin(best))
        if not np.isfinite(best[nearest]):
            return own, None
        return own, (snap.persons[nearest], float(best[nearest]))

    @property
    def persons(self) -> tuple[str, ...]:
        return self._snap.persons

    @property
    def contents(self) -> object:
        """An opaque token, a new one whenever the templates change (compare with ``is``): a camera
        that carries identities between frames learns from it that they must be matched again."""
        return self._snap

    @property
    def template_count(self) -> int:
        return len(self._snap.owner)

    def __len__(self) -> int:
        return len(self._snap.persons)

    def __contains__(self, person_id: object) -> bool:
        return person_id in self._snap.persons

    def _nearest(
        self, queries: npt.NDArray[np.float32], snap: _Snapshot
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        # |q - e|^2 = |q|^2 + |e|^2 - 2 q.e: one matrix product instead of an (N, M, D) difference array.
        d2 = (
            np.einsum("ij,ij->i", queries, queries)[:, None]
            + snap.sq_norms[None, :]
            # (M, D) @ (D, N) rather than (N, D) @ (D, M): OpenBLAS runs the tall product about twice as
            # fast for a handful of queries (measured in bench/bench_face.py's setting).
            - 2.0 * (snap.embeddings @ queries.T).T
        )
        best = np.argmin(d2, axis=1)
        dist = np.sqrt(np.maximum(d2[np.arange(len(queries)), best], 0.0)).astype(np.float32)
        return best, dist

    def match(self, embeddings: npt.NDArray[Any], *, threshold: float | None = None) -> list[Match]:
        """Top-1 open-set match of each row of ``embeddings`` (N, D) or one (D,).

        ``threshold`` overrides the gallery's (per camera). An empty gallery matches nobody.
        """
        thr = self.threshold if threshold is None else float(threshold)
        queries = self._check(embeddings)
        snap = self._snap
        if not len(snap.owner):
            return [Match(None, float("inf"), thr, self.model_id) for _ in range(len(queries))]
        best, dist = self._nearest(queries, snap)
        out = []
        for b, d in zip(best, dist, strict=True):
            person = snap.persons[snap.owner[b]] if d < thr else None
            out.append(Match(person, float(d), thr, self.model_id))
        return out

    def nearest_person(
        self, embedding: npt.NDArray[Any], *, exclude: str | None = None
    ) -> tuple[str, float] | None:
        """The closest person other than ``exclude`` and the distance, whatever the threshold.

        For the enrollment warning "this face is already close to another enrolled person".
        """
        query = self._check(embedding)[:1]
        snap = self._snap
        mask = np.ones(len(snap.owner), dtype=bool)
        if exclude is not None and exclude in snap.persons:
            mask = snap.owner != snap.persons.index(exclude)
        if not mask.any():
            return None
        sub = _Snapshot(snap.embeddings[mask], snap.sq_norms[mask], snap.owner[mask], snap.persons)
        best, dist = self._nearest(query, sub)
        return snap.persons[sub.owner[best[0]]], float(dist[0])

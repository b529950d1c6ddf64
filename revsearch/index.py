"""The index as a reader sees it: a read-only view of one committed state of an index folder.

:class:`Index` opens a snapshot of the folder (:mod:`revsearch.store`: the manifest and every
shard, memory-mapped) and searches it. A later update by another process does not change an
open Index: it keeps answering from the state it opened (:meth:`Index.reload` moves it to the
latest one). Building and updating indexes is :mod:`revsearch.indexing`'s job, called through
the operations layer (:mod:`revsearch.operations`: ``build_index``, ``update_index``); the
package's ``revsearch.Index`` is this class plus the ``build`` / ``update`` / ``from_vectors``
conveniences that call it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, store
from .embedding import Embedder, get_embedder, preprocessing_options, weights_id
from .errors import ModelMismatchError, RevsearchError
from .images import ImageSource, path_excluded, under_folder
from .safety import display_name
from .search import Match, topk_cosine
from .store import ROW_DTYPE, SPEC_KEYS, Manifest

logger = logging.getLogger(__name__)

__all__ = ["Index", "IN_MEMORY_AUGMENTATION_MAX_ROWS", "resolve_embedder", "path_excluded", "under_folder", "ROW_DTYPE", "SPEC_KEYS"]


#: An index storing no augmentation (written before revsearch stored it) gets one computed in memory at
#: search time up to this many rows; a larger one is searched with query expansion only until an update stores it.
IN_MEMORY_AUGMENTATION_MAX_ROWS = 50_000


class Index:
    """A searchable collection of image vectors stored in a folder (a read-only view).

    Use :func:`revsearch.build_index` (or :func:`revsearch.update_index`) to create or refresh
    one from a dataset folder, :meth:`open` to load an existing one (memory-mapped: milliseconds), and :meth:`search`,
    :meth:`search_vectors` or :meth:`topk` to query it.

    Attributes
    ----------
    folder : pathlib.Path
        The vector folder.
    spec : dict
        ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision`` of the vectors.
    """

    def __init__(self, snapshot: store.Snapshot) -> None:
        self._snapshot = snapshot
        self._embedder: Embedder | None = None
        self._warned_incomplete = False
        self._augmentations: dict[tuple[int, float], Any] = {}
        self._warned_damaged = False

    # ------------------------------------------------------------------ opening
    @staticmethod
    def exists(vector_dir: str | os.PathLike) -> bool:
        """Tell whether ``vector_dir`` holds an index."""
        return store.exists(vector_dir)

    @classmethod
    def open(cls, vector_dir: str | os.PathLike) -> Index:
        """Open an existing index (memory-mapped; nothing is read but the manifest and headers).

        The Index keeps the state it opened (a snapshot) even while another process updates
        the folder; :meth:`reload` moves it to the latest committed state.

        Parameters
        ----------
        vector_dir : path
            The index folder.

        Returns
        -------
        Index

        Raises
        ------
        IndexNotFoundError
            If the folder holds no index.
        IndexFormatError
            If the manifest is damaged or of a newer format.
        IndexDamagedError
            If a file of the index is missing or damaged (indexing again repairs it).
        """
        return cls(store.open_snapshot(vector_dir))

    @classmethod
    def open_manifest(cls, vector_dir: str | os.PathLike) -> Index:
        """An Index of the manifest only, with no rows: the model and dataset folder of an index
        whose shard files are missing or damaged (indexing it again repairs it).

        Raises
        ------
        IndexNotFoundError, IndexFormatError
            If there is no manifest, or it is damaged itself.
        """
        folder = Path(vector_dir)
        return cls(store.Snapshot(folder, store.read_manifest(folder), []))

    def reload(self) -> bool:
        """Move to the latest committed state of the folder; return whether it changed."""
        new = store.open_snapshot(self.folder)
        changed = new.manifest != self._snapshot.manifest
        self._snapshot = new
        if changed:
            self._augmentations.clear()
        return changed

    # ------------------------------------------------------------------ properties
    @property
    def snapshot(self) -> store.Snapshot:
        """The committed state this Index reads (manifest and memory-mapped shards)."""
        return self._snapshot

    @property
    def folder(self) -> Path:
        """The index folder."""
        return self._snapshot.folder

    @property
    def manifest(self) -> Manifest:
        """The manifest of the state this Index reads (typed: see :class:`revsearch.store.Manifest`)."""
        return self._snapshot.manifest

    @property
    def spec(self) -> dict[str, Any]:
        """What made the vectors: ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision``."""
        return self.manifest.spec

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self.manifest.dim

    @property
    def complete(self) -> bool:
        """False while (or if) an indexing run has not finished."""
        return self.manifest.complete

    def __len__(self) -> int:
        return len(self._snapshot)

    def __repr__(self) -> str:
        return f"Index({str(self.folder)!r}, {len(self)} vectors, model={self.spec['model']!r}, dim={self.dim})"

    @property
    def shards(self) -> list[np.ndarray]:
        """The vector matrices, each of shape (n_i, dim) float32 (memory-mapped)."""
        return self._snapshot.vectors

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, shape (n, dim) float32 (a view if there is one shard, else a copy)."""
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        if not shards:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(shards)

    @property
    def rows(self) -> np.ndarray:
        """Each row's file record, shape (n,) :data:`ROW_DTYPE` (``size``, ``mtime_ns``, ``digest``)."""
        parts = [np.asarray(s.rows) for s in self._snapshot.shards]
        return np.concatenate(parts) if parts else np.zeros(0, ROW_DTYPE)

    @property
    def paths(self) -> list[str]:
        """Each row's image path relative to the dataset folder, ``/``-separated, shape (n,)."""
        out: list[str] = []
        for s in self._snapshot.shards:
            out.extend(s.paths)
        return out

    @property
    def dataset_dir(self) -> Path | None:
        """The dataset folder: found next to the index as when it was built, else its absolute path."""
        return self.manifest.dataset_dir(self.folder)

    def path_of(self, row: int, dataset_dir: str | os.PathLike | None = None) -> Path:
        """The image file of a row."""
        base = Path(dataset_dir) if dataset_dir is not None else (self.dataset_dir or Path("."))
        return base / self._snapshot.path_at(int(row))

    # ------------------------------------------------------------------ embedder / compatibility
    def check_compatible(self, spec: dict[str, Any]) -> None:
        """Raise :class:`ModelMismatchError` unless ``spec`` made vectors comparable with this index.

        Parameters
        ----------
        spec : dict
            An :attr:`Embedder.spec`.
        """
        mine = self.spec
        diffs = [f"{k}: index has {mine.get(k)!r}, query has {spec.get(k)!r}" for k in SPEC_KEYS if mine.get(k) != spec.get(k)]
        if diffs:
            raise ModelMismatchError(
                f"the query is not embedded the way the index in {str(self.folder)!r} was ("
                + "; ".join(diffs)
                + f"). Use model={mine['model']!r} with the same weights (or leave the model out to use the "
                "index's own), or build a new index in another folder."
            )

    def use_embedder(self, embedder: Embedder) -> None:
        """Search with this embedder from now on (one made for the index, e.g. the one that just
        built it: its model is not loaded again).

        Raises
        ------
        ModelMismatchError
            If its vectors are not comparable with the index's.
        """
        self.check_compatible(embedder.spec)
        self._embedder = embedder

    def embedder(self) -> Embedder:
        """The embedder recorded in the index (built on first use, shared between calls)."""
        if self._embedder is None:
            spec = self.spec
            name = spec["model"]
            if name.startswith("keras:"):
                raise ModelMismatchError(
                    f"the index in {str(self.folder)!r} was built with a custom Keras model ({name}): "
                    "pass the same model (or an Embedder) to search it"
                )
            weights: Any = spec["weights"]
            if weights == "none":
                weights = None
            elif weights.startswith("file:"):  # recorded by revsearch.indexing
                weights = self.manifest.weights_path
                if not weights or not Path(weights).exists():  # a file, or a keras-hub preset folder (CLIP)
                    raise ModelMismatchError(
                        f"the index was built with weights from a file ({spec['weights']}) that is not at "
                        f"{weights!r} any more: pass the weights file again (weights=... / --weights)"
                    )
            int8 = spec.get("precision") == "int8" and backends.resolve_backend("auto", "int8") == "openvino"
            emb = get_embedder(
                name,
                weights=weights,
                # any precision makes comparable vectors: this machine's default, except that an int8 index's
                # own quantized model is reused (from the cache) so its queries run the very same model
                # (where OpenVINO runs it: without OpenVINO, or on a GPU, the default precision searches it as well)
                precision="int8" if int8 else None,
                calibration=spec.get("calibration") if int8 else None,
                **preprocessing_options(spec.get("preprocessing", "")),  # fit, fill, pooling as recorded
            )
            self.check_compatible(emb.spec)
            self._embedder = emb
        return self._embedder

    # ------------------------------------------------------------------ expansion
    @property
    def expansion(self) -> Any:
        """The :class:`~revsearch.rerank.Expansion` searches of this index use by default (recorded
        in it by ``Index.build(..., expansion=...)``; else :data:`revsearch.rerank.DEFAULT_EXPANSION`)."""
        from .rerank import recorded_expansion

        return recorded_expansion(self.manifest)

    def augmentation(self, k: int | None = None, alpha: float | None = None) -> Any:
        """The database-side augmentation of this index's vectors (what expanded search scores against).

        The one stored in the index when it has ``k`` neighbours (memory-mapped; with another
        ``alpha`` the vectors are recomputed in memory from its stored neighbours). Otherwise
        (an index written before revsearch stored it, or an update that did not finish) it is
        computed in memory once per opened Index, starting from what was stored, and a warning
        says that the next update stores it.

        Parameters
        ----------
        k : int, optional
            Neighbours (default: :attr:`expansion`'s).
        alpha : float, optional

        Returns
        -------
        StoredAugmentation, AugmentedVectors or None
            With ``.vectors`` of shape (n, dim) float32, L2-normalised. None for an index of more
            than :data:`IN_MEMORY_AUGMENTATION_MAX_ROWS` rows that stores none (searches then use
            query expansion only, with a warning, until an update stores it).
        """
        from . import rerank

        exp = self.expansion
        k = int(exp.dba or rerank.DEFAULT_EXPANSION.dba) if k is None else int(k)
        alpha = float(exp.dba_alpha) if alpha is None else float(alpha)
        stored = self._snapshot.augmentation
        if stored is not None and stored.k == k and stored.alpha == alpha:
            return stored
        key = (k, alpha)
        if key not in self._augmentations:
            old = stored if stored is not None and stored.k == k else None
            if old is None and self.manifest.dba_stale:
                try:
                    old = store.open_augmentation(self.folder, self.manifest, "dba_stale")
                except Exception:  # noqa: BLE001 - its files may be gone already: compute from scratch
                    old = None
            if len(self) > IN_MEMORY_AUGMENTATION_MAX_ROWS:
                logger.warning(
                    "the index in %s stores no up-to-date database augmentation (k=%d) and is too large (%d rows) to "
                    "compute it at search time: searching with query expansion only; updating the index (revsearch "
                    "index / Index.build) stores it", self.folder, k, len(self),
                )
                self._augmentations[key] = None
                return None
            if old is None:
                logger.warning(
                    "the index in %s stores no database augmentation (k=%d): computing it in memory for this "
                    "session; updating the index (revsearch index / Index.build) stores it", self.folder, k,
                )
            keys = store.row_keys(self.paths, self.rows)
            upd = rerank.update_augmentation(self.shards, keys, k, old)
            vectors = np.concatenate(list(rerank.augmented_blocks(self.shards, upd, alpha, old)))
            self._augmentations[key] = rerank.AugmentedVectors(k, alpha, vectors, upd.neighbours, upd.scores)
        return self._augmentations[key]

    # ------------------------------------------------------------------ searching
    def select(self, under: str | None = None, exclude_paths: Sequence[str] | None = None) -> np.ndarray | None:
        """The rows whose path lies in ``under`` and matches none of ``exclude_paths``.

        Parameters
        ----------
        under : str, optional
            A folder relative to the dataset folder (``/``-separated).
        exclude_paths : sequence of str, optional
            Patterns, as for ``--exclude`` (see :func:`path_excluded`).

        Returns
        -------
        numpy.ndarray or None
            Shape (n,) bool, or None when every row is selected.
        """
        if not under and not exclude_paths:
            return None
        patterns = list(exclude_paths or [])
        mask = np.fromiter(
            (under_folder(p, under) and not path_excluded(p, patterns) for p in self.paths), bool, count=len(self)
        )
        return None if mask.all() else mask

    def topk(
        self,
        vectors: np.ndarray,
        k: int = 9,
        *,
        exclude: Sequence[int] | None = None,
        exact: bool = False,
        under: str | None = None,
        exclude_paths: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine top-k for query vectors: exact, or approximate where an ANN index was built.

        Parameters
        ----------
        vectors : numpy.ndarray
            Shape (dim,) or (b, dim), L2-normalised float32.
        k : int, default 9
        exclude : sequence of int, optional
            Rows never to return.
        exact : bool, default False
            Force exact search even if the index holds an approximate (FAISS) index.
        under : str, optional
            Search only images in this folder (relative to the dataset folder).
        exclude_paths : sequence of str, optional
            Leave out images whose path matches one of these patterns (see :func:`path_excluded`).
            With ``under`` or ``exclude_paths`` the search is exact over the selected rows: the
            same result as an index of only those images.

        Returns
        -------
        scores : numpy.ndarray
            Shape (b, k') float32, best first (k' = min(k, rows selected)).
        rows : numpy.ndarray
            Shape (b, k') int64.
        """
        mask = self.select(under, exclude_paths) if len(self) else None
        use_ann = not exact and mask is None and bool(self.manifest.ann)
        if not use_ann:  # exact search reads every vector anyway: one pass finds the damaged ones (cached)
            exclude = self.without_damaged(exclude)
        if mask is not None:
            return self._topk_selected(vectors, k, mask, exclude)
        if len(self) == 0:
            raise RevsearchError(f"the index in {str(self.folder)!r} is empty: index some images first")
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        k = min(int(k), len(self))  # never more places than rows (a huge k allocates nothing)
        if not self.complete and not self._warned_incomplete:
            self._warned_incomplete = True
            logger.warning(
                "the index in %s is incomplete (an indexing run did not finish): results come from the %d images "
                "indexed so far; index the dataset folder again to finish it",
                self.folder, len(self),
            )
        if use_ann:
            return self._ann_topk(vectors, k, exclude)
        return topk_cosine(self.shards, vectors, k, exclude=exclude)

    def _ann_topk(self, vectors: np.ndarray, k: int, exclude: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k; only the rows it returns are checked for damage (never a pass over all vectors):
        a damaged one is excluded and the search asked again."""
        from . import ann
        from .safety import damaged_rows

        excluded = {int(r) for r in (exclude or ())}
        for _ in range(8):
            s, r = ann.ann_topk(self._snapshot, vectors, k, exclude=sorted(excluded) or None)
            found = np.unique(r[r >= 0])
            bad = found[damaged_rows(self._snapshot.take(found))] if found.size else found
            if not bad.size:
                break
            self._warn_damaged(bad)
            excluded.update(bad.tolist())
        return s, r

    def damaged_rows(self) -> np.ndarray:
        """Rows whose stored vector is damaged (NaN, infinite, or a length far from 1), shape (m,) int64.

        A vector revsearch wrote is checked when written; damage comes later (a bad copy or sync of
        the vectors file). Searches skip these rows (with a warning) and still return ``k`` good
        matches; :func:`revsearch.find_duplicates` ignores them; indexing the dataset folder again
        embeds their images again. Computed with one pass over the vectors, once per opened state.
        """
        return self._snapshot.damaged_rows()

    def _warn_damaged(self, bad: np.ndarray) -> None:
        if not self._warned_damaged:
            self._warned_damaged = True
            logger.warning(
                "the index in %s holds damaged vectors (NaN, infinite or not unit length: a damaged copy of its "
                "files?), %d found, first row %d (%s): searches skip them; index the dataset folder again to repair "
                "them", display_name(self.folder), bad.size, int(bad[0]), display_name(self._snapshot.path_at(int(bad[0]))),
            )

    def without_damaged(self, exclude: Sequence[int] | None) -> Sequence[int] | None:
        """``exclude`` plus the damaged rows (:meth:`damaged_rows`), warning once when there are any.

        For searches that score other vectors than the stored ones (the database augmentation's):
        a damaged row must not be returned whatever vector stands for it.

        Parameters
        ----------
        exclude : sequence of int, optional
            Rows already excluded.

        Returns
        -------
        sequence of int or None
            None where nothing is excluded.
        """
        bad = self.damaged_rows() if len(self) else np.zeros(0, np.int64)
        if not bad.size:
            return exclude
        self._warn_damaged(bad)
        if exclude is None:
            return bad.tolist()
        return sorted(set(int(r) for r in exclude) | set(bad.tolist()))

    def _topk_selected(
        self, vectors: np.ndarray, k: int, mask: np.ndarray, exclude: Sequence[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the rows of ``mask`` (shape (n,) bool), minus ``exclude``."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        mask = mask.copy()
        if exclude is not None:
            ex = np.asarray(list(exclude), np.int64)
            mask[ex[(ex >= 0) & (ex < len(mask))]] = False
        rows = np.flatnonzero(mask)
        b = np.atleast_2d(np.asarray(vectors)).shape[0]
        if rows.size == 0:
            return np.zeros((b, 0), np.float32), np.zeros((b, 0), np.int64)
        if rows.size * 2 <= len(mask):  # few rows: copy them out (rows.size x dim) and search those
            parts, offset = [], 0
            for shard in self.shards:
                sel = rows[(rows >= offset) & (rows < offset + len(shard))] - offset
                if sel.size:
                    parts.append(np.asarray(shard[sel], np.float32))
                offset += len(shard)
            s, r = topk_cosine([np.concatenate(parts)], vectors, min(int(k), rows.size))
            return s, rows[r]
        return topk_cosine(self.shards, vectors, min(int(k), rows.size), exclude=np.flatnonzero(~mask))

    def matches(
        self, scores: np.ndarray, rows: np.ndarray, dataset_dir: str | os.PathLike | None = None
    ) -> list[list[Match]]:
        """Turn :meth:`topk` results into :class:`~revsearch.search.Match` lists.

        Parameters
        ----------
        scores, rows : numpy.ndarray
            Shape (b, k), as :meth:`topk` (or :func:`revsearch.distributed.search_dask`) returns them.
        dataset_dir : path, optional
            Where the images are now (default: :attr:`dataset_dir`).

        Returns
        -------
        list of list of Match
        """
        base = Path(dataset_dir) if dataset_dir is not None else (self.dataset_dir or Path("."))
        out = []
        for srow, rrow in zip(scores, rows):
            rel = [self._snapshot.path_at(int(r)) for r in rrow]  # only the matched rows, not all n paths
            out.append([Match(base / p, p, float(s), rank, int(r)) for rank, (p, s, r) in enumerate(zip(rel, srow, rrow))])
        return out

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 9,
        *,
        dataset_dir: str | os.PathLike | None = None,
        exclude: Sequence[int] | None = None,
        exact: bool = False,
        under: str | None = None,
        exclude_paths: Sequence[str] | None = None,
        expand: Any = None,
    ) -> list[Match] | list[list[Match]]:
        """Search with query vectors.

        Parameters
        ----------
        vectors : array_like
            Shape (dim,) for one query, or (b, dim) for a batch (an array or nested lists);
            L2-normalised here, so scores are cosines whatever the vectors' length.
        k : int, default 9
        dataset_dir : path, optional
            Where the images are now (default: :attr:`dataset_dir`).
        exclude : sequence of int, optional
            Rows never to return.
        exact : bool, default False
            Force exact search even where an approximate index exists.
        under : str, optional
            Search only images in this folder (relative to the dataset folder).
        exclude_paths : sequence of str, optional
            Leave out images whose relative path matches one of these patterns.
        expand : bool or Expansion, optional
            Query expansion and database-side augmentation (:class:`revsearch.rerank.Expansion`):
            None or True: the index's :attr:`expansion` (the default: on); False: a plain cosine
            search of the stored vectors. With expansion a score is the cosine of the expanded
            query and the augmented vector, so even a photo's exact copy scores a little under 1.

        Returns
        -------
        list of Match, or list of lists of Match for a batch
            Best first.
        """
        from .embedding import l2_normalize

        single = np.ndim(vectors) == 1
        vectors = l2_normalize(np.asarray(vectors, dtype=np.float32))
        scores, rows = self.expanded_topk(
            vectors, k, exclude=exclude, exact=exact, under=under, exclude_paths=exclude_paths, expand=expand
        )
        out = self.matches(scores, rows, dataset_dir)
        return out[0] if single else out

    def search(
        self,
        images: ImageSource | Sequence[ImageSource],
        k: int = 9,
        *,
        embedder: Embedder | None = None,
        dataset_dir: str | os.PathLike | None = None,
        exact: bool = False,
        under: str | None = None,
        exclude_paths: Sequence[str] | None = None,
        expand: Any = None,
    ) -> list[Match] | list[list[Match]]:
        """Search with query images.

        Parameters
        ----------
        images : ImageSource or list of ImageSource
            One image (path, bytes, PIL image or (H, W, 3) uint8 array) or a list of them.
        k : int, default 9
        embedder : Embedder, optional
            Defaults to the model recorded in the index; another one must be compatible.
        dataset_dir : path, optional
            Where the images are now (default: :attr:`dataset_dir`).
        exact : bool, default False
            Force exact search even where an approximate index exists.
        under : str, optional
            Search only images in this folder (relative to the dataset folder).
        exclude_paths : sequence of str, optional
            Leave out images whose relative path matches one of these patterns (see :func:`path_excluded`).
        expand : bool or Expansion, optional
            As for :meth:`search_vectors`: on by default (the index's :attr:`expansion`), False turns it off.

        Returns
        -------
        list of Match, or list of lists of Match for a list of images
        """
        emb = embedder if embedder is not None else self.embedder()
        self.check_compatible(emb.spec)
        return self.search_vectors(  # type: ignore[arg-type]
            emb.embed(images), k, dataset_dir=dataset_dir, exact=exact, under=under, exclude_paths=exclude_paths,
            expand=expand,
        )

    def expanded_topk(
        self,
        vectors: np.ndarray,
        k: int = 9,
        *,
        exclude: Sequence[int] | None = None,
        exact: bool = False,
        under: str | None = None,
        exclude_paths: Sequence[str] | None = None,
        expand: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`topk` with the index's expansion (query expansion, database-side augmentation) applied.

        Parameters
        ----------
        vectors : numpy.ndarray
            Shape (dim,) or (b, dim), L2-normalised float32.
        k, exclude, exact, under, exclude_paths
            As for :meth:`topk`.
        expand : bool or Expansion, optional
            As for :meth:`search_vectors`.

        Returns
        -------
        scores : numpy.ndarray
            Shape (b, k') float32, best first.
        rows : numpy.ndarray
            Shape (b, k') int64.
        """
        from .rerank import resolve_expansion, search_expanded

        exp = resolve_expansion(expand, self.expansion)
        if not exp.active or len(self) == 0:
            return self.topk(vectors, k, exclude=exclude, exact=exact, under=under, exclude_paths=exclude_paths)
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        aug = self.augmentation(exp.dba, exp.dba_alpha) if exp.dba else None
        return search_expanded(
            self, vectors, min(int(k), len(self)), qe=exp.qe, alpha=exp.alpha, dba=aug, exclude=exclude, exact=exact,
            under=under, exclude_paths=exclude_paths,
        )


    # ------------------------------------------------------------------ writing lives above this view
    _MOVED = (
        "revsearch.index.Index is the read-only view; indexing is revsearch.build_index / revsearch.update_index "
        "(revsearch.Index, the package's, keeps Index.build, index.update and Index.from_vectors)"
    )

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        """Moved: see :func:`revsearch.build_index` (or ``revsearch.Index.build``)."""
        raise AttributeError(cls._MOVED)

    update_folder = build
    from_vectors = build

    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Moved: see :func:`revsearch.update_index` (or ``revsearch.Index.update``)."""
        raise AttributeError(self._MOVED)


def resolve_embedder(
    index: Index | None,
    model: Any = None,
    *,
    weights: str | os.PathLike | None = "imagenet",
    precision: str | None = None,
) -> Embedder:
    """The embedder to use with an index that may already exist.

    The index's own embedder (with the preprocessing recorded in it) when ``model`` is None or
    names the index's model with the same weights, whatever ``precision`` (precision does not
    change which vectors are comparable: an index built at one precision is searched, and updated,
    at any other); otherwise one built from ``model`` (default ``"resnet50"``), which
    :meth:`Index.check_compatible` may then refuse.

    Parameters
    ----------
    index : Index or None
    model : str, Embedder, keras.Model or None
    weights : {"imagenet", None} or path
    precision : {"float32", "bfloat16", "float16", "int8"}, optional
        Default: int8 where the index records int8 (its quantized model is reused from the cache),
        else this machine's default (:func:`revsearch.backends.default_precision`).

    Returns
    -------
    Embedder
    """
    if index is not None:
        spec = index.spec
        same = isinstance(model, str) and model.lower() == spec["model"] and weights_id(weights) == spec["weights"]
        if model is None or same:
            emb = index.embedder()
            return emb if precision is None or precision == emb.precision else emb.variant(precision=precision)
    return get_embedder(model if model is not None else "resnet50", weights=weights, precision=precision)

"""The index on disk: vectors, the paths they belong to, and what made them.

An index is one self-describing folder, with no pickle in it::

    vector_dir/
        revsearch.json            manifest: format, model spec, dataset folder, shard list
        vectors-<id>.npy          (n_i, dim) float32, L2-normalised, memory-mapped when opened
        rows-<id>.npy             (n_i,) size, mtime_ns and content hash of each row's file
        paths-<id>.txt            n_i lines: each row's image path relative to the dataset folder

Writes never modify a file in place: new shard files get new names, then the manifest is
replaced atomically (write aside, fsync, rename). A process killed at any moment leaves the
previous manifest or the new one, each naming complete files. Indexing commits a checkpoint
every few hundred images, so a rerun resumes where a killed run stopped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import Embedder, FileInfo, get_embedder, preprocessing_options, weights_id
from .errors import IndexFormatError, IndexNotFoundError, ModelMismatchError, RevsearchError
from .images import ImageSource, SkippedFile, find_images
from .search import Match, topk_cosine

logger = logging.getLogger(__name__)

__all__ = ["Index", "UpdateReport", "resolve_embedder", "MANIFEST_NAME", "FORMAT_VERSION"]

MANIFEST_NAME = "revsearch.json"
FORMAT_NAME = "revsearch-index"
FORMAT_VERSION = 1
ROW_DTYPE = np.dtype([("size", "<i8"), ("mtime_ns", "<i8"), ("digest", "V16")])
#: Spec fields that must agree between an index and a query embedder.
SPEC_KEYS = ("model", "preprocessing", "dim", "weights")
#: Shards are merged at the end of an indexing run until each holds about this many bytes.
TARGET_SHARD_BYTES = 256 * 2**20
_SHARD_PREFIXES = ("vectors-", "rows-", "paths-")


@dataclass
class UpdateReport:
    """What an indexing run did.

    Attributes
    ----------
    added, updated, removed, unchanged : list of str
        Relative paths of images that were new, changed (re-embedded), deleted from the folder
        (dropped from the index), or kept as they were.
    skipped : list of SkippedFile
        Files that could not be read, with the reason.
    seconds : float
        Wall time of the run.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        """Number of images embedded in this run."""
        return len(self.added) + len(self.updated)

    def summary(self) -> str:
        """One line: counts of each kind."""
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped in {self.seconds:.1f} s"
        )


@dataclass
class _Shard:
    token: str
    count: int
    vectors: np.ndarray  # (count, dim) memmap
    _rows: np.ndarray | None = None
    _paths: list[str] | None = None
    folder: Path | None = None

    @property
    def files(self) -> dict[str, str]:
        return {
            "vectors": f"vectors-{self.token}.npy",
            "rows": f"rows-{self.token}.npy",
            "paths": f"paths-{self.token}.txt",
        }

    def _missing(self, kind: str) -> IndexFormatError:
        assert self.folder is not None
        return IndexFormatError(
            f"index file {str(self.folder / self.files[kind])!r} is gone: the index was updated (or damaged) "
            "since this Index was opened; open it again with Index.open"
        )

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            assert self.folder is not None
            try:
                self._rows = np.load(self.folder / self.files["rows"], mmap_mode="r")
            except FileNotFoundError:
                raise self._missing("rows") from None
        return self._rows

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            assert self.folder is not None
            try:
                text = (self.folder / self.files["paths"]).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise self._missing("paths") from None
            paths = text.split("\n")[:-1] if text else []
            if len(paths) != self.count:
                raise IndexFormatError(
                    f"index file {str(self.folder / self.files['paths'])!r} names {len(paths)} images, "
                    f"expected {self.count}: the index is damaged; rebuild it"
                )
            self._paths = paths
        return self._paths


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary sibling, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _new_token() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(3)}"


def _write_shard(
    folder: Path, vectors: np.ndarray, rows: np.ndarray, paths: Sequence[str], *, token: str | None = None
) -> _Shard:
    """Write the three files of a new shard (atomically each); the manifest does not name it yet.

    ``token`` names the files (default: a new unique one). A deterministic token (Dask partitions)
    makes a retried write replace the same files; the paths file is written last, so its presence
    means the shard is complete.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not (len(vectors) == len(rows) == len(paths)):
        raise ValueError("vectors, rows and paths must be aligned")
    shard = _Shard(token or _new_token(), len(vectors), vectors, folder=folder)
    _write_atomic(folder / shard.files["vectors"], lambda fh: np.lib.format.write_array(fh, vectors, allow_pickle=False))
    _write_rows_and_paths(shard, np.asarray(rows, ROW_DTYPE), list(paths))
    return shard


def _write_rows_and_paths(shard: _Shard, rows: np.ndarray, paths: list[str]) -> None:
    """Write a shard's rows file, then its paths file (last: its presence marks a complete shard)."""
    assert shard.folder is not None
    f = shard.files
    _write_atomic(shard.folder / f["rows"], lambda fh: np.lib.format.write_array(fh, rows, allow_pickle=False))
    text = "".join(p + "\n" for p in paths)
    _write_atomic(shard.folder / f["paths"], lambda fh: fh.write(text.encode("utf-8")))
    shard._rows, shard._paths = rows, paths


def _rows_from_infos(infos: Sequence[FileInfo]) -> np.ndarray:
    rows = np.zeros(len(infos), ROW_DTYPE)
    for i, inf in enumerate(infos):
        rows[i] = (inf.size, inf.mtime_ns, inf.digest)
    return rows


class _Lock:
    """An exclusive lock on an index folder while it is written (advisory, POSIX only)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".revsearch.lock"
        self.fh: Any = None

    def __enter__(self) -> _Lock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return self
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise RevsearchError(
                f"another process is writing the index in {str(self.path.parent)!r}: wait for it to finish"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


class Index:
    """A searchable collection of image vectors stored in a folder.

    Use :meth:`build` (or :meth:`update`) to create or refresh one from a dataset folder,
    :meth:`open` to load an existing one (memory-mapped: milliseconds), and :meth:`search`,
    :meth:`search_vectors` or :meth:`topk` to query it.

    Attributes
    ----------
    folder : pathlib.Path
        The vector folder.
    spec : dict
        ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision`` of the vectors.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], shards: list[_Shard]) -> None:
        self.folder = folder
        self.manifest = manifest
        self._shards = shards
        self._embedder: Embedder | None = None

    # ------------------------------------------------------------------ opening
    @staticmethod
    def exists(vector_dir: str | os.PathLike) -> bool:
        """Tell whether ``vector_dir`` holds an index."""
        return (Path(vector_dir) / MANIFEST_NAME).is_file()

    @classmethod
    def open(cls, vector_dir: str | os.PathLike) -> Index:
        """Open an existing index (memory-mapped; nothing is read but the manifest and headers).

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
            If the manifest or a shard is damaged or of a newer format.
        """
        folder = Path(vector_dir)
        mpath = folder / MANIFEST_NAME
        if not mpath.is_file():
            legacy = folder.is_dir() and any(
                p.suffix.lower() in (".pbz2", ".pickle") for p in folder.iterdir() if p.is_file()
            )
            hint = (
                " It holds vector files of the original project: convert them with "
                f"`revsearch import-legacy {folder} NEW_VECTOR_DIR`."
                if legacy
                else " Build one first: reverse_image_search(..., generate=True) or `revsearch index DATASET_DIR VECTOR_DIR`."
            )
            raise IndexNotFoundError(f"no revsearch index in {str(folder)!r}.{hint}")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"the index manifest {str(mpath)!r} is damaged ({e}); rebuild the index") from None
        if manifest.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{str(mpath)!r} is not a revsearch index manifest")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise IndexFormatError(
                f"the index in {str(folder)!r} has format version {manifest['format_version']}, newer than this "
                f"revsearch understands ({FORMAT_VERSION}): upgrade revsearch"
            )
        dim = int(manifest["spec"]["dim"])
        shards = []
        for entry in manifest["shards"]:
            shard = _Shard(entry["token"], int(entry["count"]), np.empty((0, dim), np.float32), folder=folder)
            vpath = folder / shard.files["vectors"]
            try:
                vec = np.load(vpath, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise IndexFormatError(f"index file {str(vpath)!r} is missing or damaged ({e}); rebuild the index") from None
            if vec.dtype != np.float32 or vec.shape != (shard.count, dim):
                raise IndexFormatError(
                    f"index file {str(vpath)!r} holds {vec.shape} {vec.dtype}, expected ({shard.count}, {dim}) float32"
                )
            shard.vectors = vec
            shards.append(shard)
        return cls(folder, manifest, shards)

    # ------------------------------------------------------------------ properties
    @property
    def spec(self) -> dict[str, Any]:
        """What made the vectors: ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision``."""
        return dict(self.manifest["spec"])

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.manifest["spec"]["dim"])

    @property
    def complete(self) -> bool:
        """False while (or if) an indexing run has not finished."""
        return bool(self.manifest.get("complete", True))

    def __len__(self) -> int:
        return sum(s.count for s in self._shards)

    def __repr__(self) -> str:
        return f"Index({str(self.folder)!r}, {len(self)} vectors, model={self.spec['model']!r}, dim={self.dim})"

    @property
    def shards(self) -> list[np.ndarray]:
        """The vector matrices, each of shape (n_i, dim) float32 (memory-mapped)."""
        return [s.vectors for s in self._shards]

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, shape (n, dim) float32 (a view if there is one shard, else a copy)."""
        if len(self._shards) == 1:
            return self._shards[0].vectors
        if not self._shards:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([s.vectors for s in self._shards])

    @property
    def paths(self) -> list[str]:
        """Each row's image path relative to the dataset folder, ``/``-separated, shape (n,)."""
        out: list[str] = []
        for s in self._shards:
            out.extend(s.paths)
        return out

    @property
    def dataset_dir(self) -> Path | None:
        """The dataset folder: found next to the index as when it was built, else its absolute path."""
        d = self.manifest.get("dataset_dir") or {}
        rel, absolute = d.get("relative_to_index"), d.get("absolute")
        if rel is not None and (self.folder / rel).is_dir():
            return (self.folder / rel).resolve()
        if absolute:
            return Path(absolute)
        return None

    def path_of(self, row: int, dataset_dir: str | os.PathLike | None = None) -> Path:
        """The image file of a row."""
        base = Path(dataset_dir) if dataset_dir is not None else (self.dataset_dir or Path("."))
        return base / self._path_at(row)

    def _path_at(self, row: int) -> str:
        for s in self._shards:
            if row < s.count:
                return s.paths[row]
            row -= s.count
        raise IndexError("row out of range")

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
            elif weights.startswith("file:"):
                weights = self.manifest.get("weights_path")
                if not weights or not Path(weights).is_file():
                    raise ModelMismatchError(
                        f"the index was built with weights from a file ({spec['weights']}) that is not at "
                        f"{weights!r} any more: pass the weights file again (weights=... / --weights)"
                    )
            emb = get_embedder(
                name,
                weights=weights,
                precision=spec.get("precision", "float32"),
                **preprocessing_options(spec.get("preprocessing", "")),  # fit, fill, pooling as recorded
            )
            self.check_compatible(emb.spec)
            self._embedder = emb
        return self._embedder

    # ------------------------------------------------------------------ searching
    def topk(
        self, vectors: np.ndarray, k: int = 9, *, exclude: Sequence[int] | None = None, exact: bool = False
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

        Returns
        -------
        scores : numpy.ndarray
            Shape (b, k') float32, best first (k' = min(k, len(self))).
        rows : numpy.ndarray
            Shape (b, k') int64.
        """
        if len(self) == 0:
            raise RevsearchError(f"the index in {str(self.folder)!r} is empty: index some images first")
        if not exact and self.manifest.get("ann"):
            from .ann import ann_topk

            return ann_topk(self, vectors, k, exclude=exclude)
        return topk_cosine(self.shards, vectors, k, exclude=exclude)

    def _matches(
        self, scores: np.ndarray, rows: np.ndarray, dataset_dir: str | os.PathLike | None
    ) -> list[list[Match]]:
        base = Path(dataset_dir) if dataset_dir is not None else (self.dataset_dir or Path("."))
        out = []
        for srow, rrow in zip(scores, rows):
            rel = [self._path_at(int(r)) for r in rrow]  # only the matched rows, not all n paths
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

        Returns
        -------
        list of Match, or list of lists of Match for a batch
            Best first.
        """
        from .embedding import l2_normalize

        single = np.ndim(vectors) == 1
        vectors = l2_normalize(np.asarray(vectors, dtype=np.float32))
        scores, rows = self.topk(vectors, k, exclude=exclude, exact=exact)
        out = self._matches(scores, rows, dataset_dir)
        return out[0] if single else out

    def search(
        self,
        images: ImageSource | Sequence[ImageSource],
        k: int = 9,
        *,
        embedder: Embedder | None = None,
        dataset_dir: str | os.PathLike | None = None,
        exact: bool = False,
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

        Returns
        -------
        list of Match, or list of lists of Match for a list of images
        """
        emb = embedder if embedder is not None else self.embedder()
        self.check_compatible(emb.spec)
        return self.search_vectors(emb.embed(images), k, dataset_dir=dataset_dir, exact=exact)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ writing
    @classmethod
    def build(
        cls,
        dataset_dir: str | os.PathLike,
        vector_dir: str | os.PathLike,
        embedder: Embedder | str = "resnet50",
        **kwargs: Any,
    ) -> tuple[Index, UpdateReport]:
        """Index every image of a folder, or bring an existing index of it up to date.

        Same as :meth:`update`; see there for the parameters.
        """
        return cls.update_folder(dataset_dir, vector_dir, embedder, **kwargs)

    def update(self, dataset_dir: str | os.PathLike | None = None, **kwargs: Any) -> UpdateReport:
        """Bring this index up to date with its dataset folder (see :meth:`update_folder`).

        Returns
        -------
        UpdateReport
        """
        base = dataset_dir if dataset_dir is not None else self.dataset_dir
        if base is None:
            raise RevsearchError("the index does not record its dataset folder: pass dataset_dir")
        emb = kwargs.pop("embedder", None) or self.embedder()
        new, report = Index.update_folder(base, self.folder, emb, **kwargs)
        self.manifest, self._shards = new.manifest, new._shards
        return report

    @classmethod
    def update_folder(
        cls,
        dataset_dir: str | os.PathLike,
        vector_dir: str | os.PathLike,
        embedder: Embedder | str = "resnet50",
        *,
        weights: str | os.PathLike | None = "imagenet",
        batch_size: int = 32,
        workers: int | None = None,
        checkpoint_every: int = 512,
        progress: bool = True,
    ) -> tuple[Index, UpdateReport]:
        """Create or incrementally update the index of ``dataset_dir`` in ``vector_dir``.

        Only new or changed images are embedded (a file is unchanged if its size and
        modification time match, or failing that its content hash); rows of deleted files are
        dropped. Progress is committed every ``checkpoint_every`` images, so a killed run loses
        at most that much work and a rerun resumes.

        Parameters
        ----------
        dataset_dir : path
            Folder of images (searched recursively).
        vector_dir : path
            Index folder (created if needed). May lie inside ``dataset_dir``; it is not indexed.
        embedder : Embedder or str, default "resnet50"
            The model. An existing index must have been built with a compatible one.
        weights : {"imagenet", None} or path
            Used when ``embedder`` is a name.
        batch_size : int, default 32
        workers : int, optional
            Image-reading threads.
        checkpoint_every : int, default 512
        progress : bool, default True

        Returns
        -------
        index : Index
        report : UpdateReport

        Raises
        ------
        ModelMismatchError
            If ``vector_dir`` holds an index made by another model.
        """
        t0 = time.perf_counter()
        dataset = Path(dataset_dir)
        folder = Path(vector_dir)
        emb = embedder if isinstance(embedder, Embedder) else get_embedder(embedder, weights=weights)
        files = find_images(dataset, exclude=[folder])
        rel = [p.relative_to(dataset).as_posix() for p in files]
        bad_names = [r for r in rel if "\n" in r or "\r" in r]
        report = UpdateReport()
        if bad_names:
            report.skipped.extend(SkippedFile(dataset / r, "file name contains a line break") for r in bad_names)
            keep = [i for i, r in enumerate(rel) if r not in set(bad_names)]
            files, rel = [files[i] for i in keep], [rel[i] for i in keep]
        folder.mkdir(parents=True, exist_ok=True)
        with _Lock(folder):
            old = cls.open(folder) if cls.exists(folder) else None
            if old is not None:
                old.check_compatible(emb.spec)
            writer = _Writer(folder, emb, dataset, old)
            todo = writer.plan(files, rel, report)
            done: set[str] = set()
            if todo:
                for batch in emb.embed_files(
                    [files[i] for i in todo], batch_size=batch_size, workers=workers, progress=progress, desc="indexing"
                ):
                    writer.add(
                        [rel[todo[j]] for j in batch.indices], batch.vectors, batch.infos, checkpoint_every
                    )
                    done.update(rel[todo[j]] for j in batch.indices)
                    report.skipped.extend(batch.skipped)
            writer.finish()
            stale_ann = (writer.manifest or {}).get("ann_stale")
            if stale_ann:  # the index had an approximate index: extend or rebuild it (logged there)
                from .ann import refresh_after_update

                refresh_after_update(folder, stale_ann, progress=progress)
        report.added = [r for r in report.added if r in done]
        report.updated = [r for r in report.updated if r in done]
        report.seconds = time.perf_counter() - t0
        logger.info("index %s: %s", folder, report.summary())
        return cls.open(folder), report

    # ------------------------------------------------------------------ creating from vectors
    @classmethod
    def from_vectors(
        cls,
        vector_dir: str | os.PathLike,
        vectors: np.ndarray,
        paths: Sequence[str],
        spec: dict[str, Any],
        *,
        dataset_dir: str | os.PathLike | None = None,
        rows: np.ndarray | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Index:
        """Write a new index from vectors made elsewhere (e.g. imported legacy files).

        Parameters
        ----------
        vector_dir : path
            An empty or new folder (an existing index there is refused, not overwritten).
        vectors : numpy.ndarray
            Shape (n, dim); normalised here.
        paths : sequence of str
            Shape (n,), paths relative to the dataset folder.
        spec : dict
            ``model``, ``preprocessing``, ``dim``, ``weights`` (and ``precision``).
        dataset_dir : path, optional
        rows : numpy.ndarray, optional
            File size/mtime/hash records; unknown (size -1) by default.
        extra : dict, optional
            More manifest entries.

        Returns
        -------
        Index
        """
        from .embedding import l2_normalize

        folder = Path(vector_dir)
        if cls.exists(folder):
            raise RevsearchError(
                f"{str(folder)!r} already holds an index: choose an empty folder (nothing was overwritten)"
            )
        vectors = np.asarray(vectors, np.float32)
        vectors = l2_normalize(vectors.reshape(len(paths), -1 if len(paths) else int(spec["dim"])))
        if vectors.shape[1] != int(spec["dim"]):
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, spec says {spec['dim']}")
        if rows is None:
            rows = np.zeros(len(paths), ROW_DTYPE)
            rows["size"] = -1
        folder.mkdir(parents=True, exist_ok=True)
        with _Lock(folder):
            shard = _write_shard(folder, vectors, rows, list(paths))
            _commit(folder, spec, [shard], dataset_dir, complete=True, extra=extra)
        return cls.open(folder)


def resolve_embedder(
    index: Index | None,
    model: Any = None,
    *,
    weights: str | os.PathLike | None = "imagenet",
    precision: str = "float32",
) -> Embedder:
    """The embedder to use with an index that may already exist.

    The index's own embedder (with the preprocessing recorded in it) when ``model`` is None or
    names the index's model with the same weights and precision; otherwise one built from
    ``model`` (default ``"resnet50"``), which :meth:`Index.check_compatible` may then refuse.

    Parameters
    ----------
    index : Index or None
    model : str, Embedder, keras.Model or None
    weights : {"imagenet", None} or path
    precision : {"float32", "bfloat16"}

    Returns
    -------
    Embedder
    """
    if index is not None:
        spec = index.spec
        same = (
            isinstance(model, str)
            and model.lower() == spec["model"]
            and weights_id(weights) == spec["weights"]
            and precision == spec.get("precision", "float32")
        )
        if model is None or same:
            return index.embedder()
    return get_embedder(model if model is not None else "resnet50", weights=weights, precision=precision)


def _commit(
    folder: Path,
    spec: dict[str, Any],
    shards: list[_Shard],
    dataset_dir: Path | str | os.PathLike | None,
    *,
    complete: bool,
    extra: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Atomically replace the manifest, then delete shard files it no longer names."""
    manifest: dict[str, Any] = dict(previous or {})
    stale_ann = manifest.pop("ann", None)  # an approximate index is stale once the vectors change:
    if stale_ann:  # remember it, so the end of the run (or a resumed run) rebuilds or extends it (revsearch.ann)
        manifest["ann_stale"] = stale_ann
    manifest.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "revsearch_version": _version(),
            "spec": spec,
            "count": sum(s.count for s in shards),
            "complete": complete,
            "created": manifest.get("created") or _now(),
            "updated": _now(),
            "shards": [{"token": s.token, "count": s.count} for s in shards],
        }
    )
    if dataset_dir is not None:
        ds = Path(dataset_dir).resolve()
        manifest["dataset_dir"] = {
            "absolute": str(ds),
            "relative_to_index": os.path.relpath(ds, folder.resolve()),
        }
    if extra:
        manifest.update(extra)
    data = json.dumps(manifest, indent=2).encode("utf-8")
    _write_atomic(folder / MANIFEST_NAME, lambda f: f.write(data))
    _fsync_dir(folder)
    _collect_garbage(folder, shards)
    return manifest


def _collect_garbage(folder: Path, shards: list[_Shard]) -> None:
    live = {name for s in shards for name in s.files.values()}
    for p in folder.iterdir():
        name = p.name
        stale_shard = name.startswith(_SHARD_PREFIXES) and name not in live
        stale_tmp = name.startswith(".") and name.endswith(".tmp")
        if stale_shard or stale_tmp:
            with contextlib.suppress(OSError):
                p.unlink()


def _version() -> str:
    from . import __version__

    return __version__


class _Writer:
    """Plans and performs one incremental indexing run."""

    def __init__(self, folder: Path, emb: Embedder, dataset: Path, old: Index | None) -> None:
        self.folder = folder
        self.emb = emb
        self.dataset = dataset
        self.old = old
        self.shards: list[_Shard] = []
        self.new_shards: list[_Shard] = []
        self.buf_vec: list[np.ndarray] = []
        self.buf_paths: list[str] = []
        self.buf_infos: list[FileInfo] = []
        extra = {}
        if emb.weights.startswith("file:") and emb._weights_arg is not None:
            extra["weights_path"] = str(Path(emb._weights_arg).resolve())
        self.extra = extra
        self.manifest = old.manifest if old is not None else None

    def plan(self, files: list[Path], rel: list[str], report: UpdateReport) -> list[int]:
        """Decide which rows to keep and which files to embed; commit the kept rows if they changed."""
        where = {r: i for i, r in enumerate(rel)}
        old = self.old
        if old is None:
            report.added.extend(rel)
            self._commit(complete=False)
            return list(range(len(rel)))
        keep_paths: list[str] = []
        shards: list[_Shard] = []
        changed_any = False
        embedded_again: set[str] = set()
        for shard in old._shards:
            rows = np.array(shard.rows)  # small copy: (n,) records
            keep_mask = np.zeros(shard.count, bool)
            shard_changed = False
            for j, path in enumerate(shard.paths):
                i = where.get(path)
                if i is None:
                    report.removed.append(path)
                    continue
                status = self._same_file(files[i], rows[j])
                if status == "same":
                    keep_mask[j] = True
                elif status == "refreshed":
                    keep_mask[j] = True
                    st = os.stat(files[i])
                    rows[j]["size"], rows[j]["mtime_ns"] = st.st_size, st.st_mtime_ns
                    shard_changed = True
                else:
                    embedded_again.add(path)
            paths = [p for p, m in zip(shard.paths, keep_mask) if m]
            keep_paths.extend(paths)
            if keep_mask.all() and not shard_changed:
                shards.append(shard)  # kept as it is: unchanged shards are never rewritten
                continue
            changed_any = True
            if paths:  # rewrite this shard only (bounded memory: one shard at a time)
                shards.append(_write_shard(self.folder, np.asarray(shard.vectors)[keep_mask], rows[keep_mask], paths))
        self.shards = shards
        if changed_any:
            self._commit(complete=False)
        kept = set(keep_paths)
        report.unchanged.extend(p for p in keep_paths)
        todo = []
        for i, r in enumerate(rel):
            if r in kept:
                continue
            (report.updated if r in embedded_again else report.added).append(r)
            todo.append(i)
        return todo

    def _same_file(self, path: Path, row: np.void) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "changed"
        if int(row["size"]) == st.st_size and int(row["mtime_ns"]) == st.st_mtime_ns:
            return "same"
        if int(row["size"]) in (st.st_size, -1):
            import hashlib

            with open(path, "rb") as f:
                digest = hashlib.blake2b(f.read(), digest_size=16).digest()
            if int(row["size"]) == -1:
                row["digest"] = digest  # a legacy row: trust the vector, learn the file
                return "refreshed"
            if bytes(row["digest"]) == digest:
                return "refreshed"
        return "changed"

    def add(self, paths: list[str], vectors: np.ndarray, infos: list[FileInfo], checkpoint_every: int) -> None:
        self.buf_vec.append(vectors)
        self.buf_paths.extend(paths)
        self.buf_infos.extend(infos)
        if len(self.buf_paths) >= checkpoint_every:
            self._flush()

    def _flush(self) -> None:
        if not self.buf_paths:
            return
        shard = _write_shard(self.folder, np.concatenate(self.buf_vec), _rows_from_infos(self.buf_infos), self.buf_paths)
        self.shards.append(shard)
        self.new_shards.append(shard)
        self.buf_vec, self.buf_paths, self.buf_infos = [], [], []
        self._commit(complete=False)

    def finish(self) -> None:
        self._flush()
        self.shards = _consolidate(self.folder, self.shards, self.emb.dim)
        self._commit(complete=True)

    def _commit(self, *, complete: bool) -> None:
        self.manifest = _commit(
            self.folder, self.emb.spec, self.shards, self.dataset, complete=complete, extra=self.extra, previous=self.manifest
        )


def _consolidate(folder: Path, shards: list[_Shard], dim: int) -> list[_Shard]:
    """Merge runs of small shards into shards of about TARGET_SHARD_BYTES (streaming, bounded memory)."""
    target_rows = max(1, TARGET_SHARD_BYTES // (4 * dim))
    groups: list[list[_Shard]] = []
    for s in shards:
        if groups and sum(g.count for g in groups[-1]) + s.count <= target_rows:
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for g in groups:
        if len(g) == 1:
            out.append(g[0])
            continue
        out.append(_merge(folder, g, dim))
    return out


def _merge(folder: Path, group: list[_Shard], dim: int) -> _Shard:
    """Write the shards of ``group`` as one, streaming their vectors (no whole copy in memory)."""
    n = sum(s.count for s in group)
    merged = _Shard(_new_token(), n, np.empty((0, dim), np.float32), folder=folder)
    vpath = folder / merged.files["vectors"]

    def write_vectors(fh: Any) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(fh, header)
        for s in group:
            fh.write(memoryview(np.ascontiguousarray(s.vectors, dtype=np.float32)).cast("B"))

    _write_atomic(vpath, write_vectors)
    _write_rows_and_paths(
        merged, np.concatenate([np.asarray(s.rows) for s in group]), [p for s in group for p in s.paths]
    )
    merged.vectors = np.load(vpath, mmap_mode="r")
    return merged
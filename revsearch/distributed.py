"""Indexing and searching on a Dask cluster: collections too big for one machine.

:func:`build_index_dask` splits the images of a dataset folder into partitions; each Dask task
embeds one partition on a worker (the model is built once per worker process and kept) and
writes it as one shard of the index, in the usual on-disk format, under a name derived from the
partition's content. The client then writes the manifest naming the shards. The dataset folder
and the vector folder must be reachable at the same paths from the client and every worker
(a shared file system), which a :class:`~distributed.LocalCluster` trivially is.

Fault tolerance follows from the names: a shard's files are written atomically under a
deterministic token, so a partition retried after a failed or killed worker replaces the same
files (no row is lost or duplicated), and a rerun after an interrupted run reuses every shard
already written. Partitions are cut where a hash of the file name says so (content-defined
chunking), so adding or changing a few images re-embeds only their partitions.

:func:`search_dask` runs exact search on the cluster: each task scores a contiguous group of
shards, and the client merges the per-group top-k; the result is that of
:meth:`revsearch.Index.topk` with ``exact=True``.

Dask is an optional extra (``pip install revsearch[dask]``), imported inside functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import store
from .errors import ModelMismatchError, OptionalDependencyError, RevsearchError

if TYPE_CHECKING:  # pragma: no cover
    from .embedding import Embedder
    from .index import Index
    from .indexing import UpdateReport

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PARTITION_SIZE",
    "DaskReport",
    "build_index_dask",
    "dask_client",
    "partition_files",
    "partition_token",
    "search_dask",
]

#: Average number of images per partition (one task, one shard).
DEFAULT_PARTITION_SIZE = 512


def _distributed() -> Any:
    """Import ``dask.distributed``, or raise :class:`OptionalDependencyError` saying how to install it."""
    try:
        import distributed
    except ImportError as e:
        raise OptionalDependencyError(
            f"Dask indexing and search need Dask, an optional extra: pip install revsearch[dask] ({e})"
        ) from None
    if not hasattr(distributed, "Client"):
        raise OptionalDependencyError(
            f"the module 'distributed' found first ({getattr(distributed, '__file__', '?')}) is not Dask's: "
            "rename it (or run from another folder); Dask is installed with pip install revsearch[dask]"
        )
    return distributed


# ---------------------------------------------------------------------------------------- client
@contextlib.contextmanager
def dask_client(
    client: Any = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    **cluster_kwargs: Any,
) -> Iterator[Any]:
    """A Dask client: the one given, one connected to a scheduler address, or a new local cluster.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client (used as it is); a scheduler address such as ``"tcp://10.0.0.5:8786"``
        (connected, then closed at the end); ``"local"`` for a new
        :class:`~distributed.LocalCluster` (closed at the end); ``None`` for the current default
        client if there is one, else a new local cluster.
    n_workers : int, default 2
        Worker processes of a new local cluster.
    threads_per_worker : int, default 1
        Task threads per worker of a new local cluster.
    **cluster_kwargs
        More :class:`~distributed.LocalCluster` arguments. By default each local worker lets
        TensorFlow use ``cpu_count // n_workers`` threads (``TF_NUM_INTRAOP_THREADS``), so the
        workers do not fight over cores, and the dashboard takes any free port.

    Yields
    ------
    distributed.Client
    """
    distributed = _distributed()
    if isinstance(client, distributed.Client):
        yield client
        return
    if client is None:
        try:
            yield distributed.get_client()
            return
        except ValueError:
            client = "local"
    if isinstance(client, str) and client.lower() == "local":
        threads = max(1, (os.cpu_count() or 1) // max(1, n_workers))
        env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": str(threads),
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        env.update(cluster_kwargs.pop("env", {}) or {})
        cluster_kwargs.setdefault("dashboard_address", ":0")
        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, env=env, **cluster_kwargs
        )
        c = distributed.Client(cluster)
        try:
            yield c
        finally:
            c.close()
            cluster.close()
        return
    if not isinstance(client, str):
        raise TypeError(f"client must be a distributed.Client, a scheduler address, 'local' or None; got {client!r}")
    c = distributed.Client(client)
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------------------------------- partitions
def partition_files(rel: Sequence[str], partition_size: int = DEFAULT_PARTITION_SIZE) -> list[range]:
    """Split a sorted list of files into partitions, cut where a hash of the file name says so.

    A partition ends after a file whose name hashes to 0 modulo ``partition_size`` (and after
    ``2 * partition_size`` files at most), so partitions hold ``partition_size`` files on
    average, and adding or removing a file changes only its own partition (and, rarely, the next).

    Parameters
    ----------
    rel : sequence of str
        Shape (n,), relative paths in index order.
    partition_size : int, default 512

    Returns
    -------
    list of range
        Consecutive ranges of positions in ``rel`` covering it.
    """
    if partition_size < 1:
        raise ValueError(f"partition_size must be at least 1, not {partition_size}")
    out: list[range] = []
    start = 0
    for i, r in enumerate(rel):
        h = int.from_bytes(hashlib.blake2b(r.encode("utf-8", store.PATH_ERRORS), digest_size=8).digest(), "little")
        if h % partition_size == 0 or i + 1 - start >= 2 * partition_size:
            out.append(range(start, i + 1))
            start = i + 1
    if start < len(rel):
        out.append(range(start, len(rel)))
    return out


def partition_token(spec: dict[str, Any], rel: Sequence[str], stats: Sequence[tuple[int, int]]) -> str:
    """The shard token of a partition: a hash of the model spec and of its files' names, sizes and times.

    Parameters
    ----------
    spec : dict
        The embedder's spec.
    rel : sequence of str
        Shape (m,), the partition's relative paths.
    stats : sequence of (int, int)
        Shape (m,), each file's size and modification time in nanoseconds.

    Returns
    -------
    str
        ``"d<24 hex digits>"``; the shard files are ``vectors-<token>.npy`` etc.
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps({k: spec.get(k) for k in sorted(spec)}, sort_keys=True).encode("utf-8"))
    for r, (size, mtime) in zip(rel, stats):
        h.update(f"\0{r}\0{size}\0{mtime}".encode("utf-8", store.PATH_ERRORS))
    return "d" + h.hexdigest()


# ---------------------------------------------------------------------------------------- the worker side
def _embedder_args(emb: Embedder) -> dict[str, Any]:
    """Arguments that rebuild ``emb`` with :func:`revsearch.embedding.get_embedder` on a worker."""
    from .embedding import get_embedder

    from .models import MODELS

    if emb.name not in MODELS:
        raise RevsearchError(
            f"Dask indexing needs a named model (one of revsearch.MODELS); {emb.name!r} is a custom "
            "Keras model, which the workers cannot rebuild"
        )
    accepted = inspect.signature(get_embedder).parameters
    weights: str | None = {"imagenet": "imagenet", "none": None}.get(emb.weights)
    if emb.weights_path is not None:
        weights = str(emb.weights_path)
    args: dict[str, Any] = {"model": emb.name, "weights": weights, "precision": emb.precision}
    if emb.precision == "int8":  # workers read the int8 model named by its calibration id from their cache
        if emb.calibration_id and "calibration" in accepted:
            args["calibration"] = emb.calibration_id
        else:  # nothing to calibrate with on the workers: the default precision (vectors are comparable)
            logger.warning("int8 on Dask needs an embedder calibrated first (Embedder.calibrate): the workers "
                           "use the default precision")
            args["precision"] = None
    for name in ("fit", "fill", "pooling", "resolution", "scales", "backend"):
        if name in accepted and hasattr(emb, name):
            args[name] = getattr(emb, name)
    return args


_MODEL_HASHES: dict[str, str] = {}


def _model_hash(emb: Embedder) -> str:
    """SHA-256 (16 hex digits) of a model's weights, computed once per embedder in a process."""
    key = f"{id(emb)}"
    if key not in _MODEL_HASHES:
        h = hashlib.sha256()
        for w in emb.keras_model.get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
        _MODEL_HASHES[key] = h.hexdigest()[:16]
    return _MODEL_HASHES[key]


def _warm_plugin(embedder_args: dict[str, Any]) -> Any:
    """A worker plugin that builds the embedder's model when a worker starts (or restarts).

    Building it there, in the worker's main thread, matters for ``weights=None``: Keras seeds a
    random model from Python's global ``random`` state, which the worker's event loop also draws
    from; a model built in a task thread can therefore come out different on each worker.
    """
    distributed = _distributed()

    class WarmEmbedder(distributed.WorkerPlugin):  # type: ignore[misc,name-defined]
        def __init__(self, args: dict[str, Any]) -> None:
            self.args = args
            self.name = "revsearch-embedder-" + hashlib.blake2b(
                json.dumps(args, sort_keys=True, default=str).encode(), digest_size=8
            ).hexdigest()

        def setup(self, worker: Any) -> None:
            from .embedding import get_embedder

            _model_hash(get_embedder(**self.args))

    return WarmEmbedder(embedder_args)


def _embed_partition(
    number: int,
    token: str,
    store_id: str,
    folder: str,
    dataset: str,
    rel: list[str],
    embedder_args: dict[str, Any],
    spec: dict[str, Any],
    batch_size: int,
    read_workers: int | None,
    hook: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Embed one partition on a worker and write it as shard ``token`` (skipped if already written)."""
    from .embedding import get_embedder
    from .indexing import rows_from_infos
    from .store import SPEC_KEYS

    t0 = time.perf_counter()
    out: dict[str, Any] = {"number": number, "token": token, "pid": os.getpid(), "skipped": [], "reused": False}
    if hook is not None:
        hook(number, token)
    vdir, base = Path(folder), Path(dataset)
    done = store.find_shard(vdir, store_id, token, int(spec["dim"]))
    if done is not None:
        out.update(count=done.count, reused=True, seconds=time.perf_counter() - t0)
        return out
    emb = get_embedder(**embedder_args)  # cached per worker process: the model is built once (see _warm_plugin)
    out["model_hash"] = _model_hash(emb)
    theirs = {k: emb.spec.get(k) for k in SPEC_KEYS}
    if theirs != {k: spec.get(k) for k in SPEC_KEYS}:
        raise ModelMismatchError(f"the worker's model {theirs} differs from the client's {spec}")
    files = [base / r for r in rel]
    rel_of = {str(f): r for f, r in zip(files, rel)}
    vecs: list[np.ndarray] = []
    infos: list[Any] = []
    paths: list[str] = []
    for batch in emb.embed_files(files, batch_size=batch_size, workers=read_workers, progress=False):
        vecs.append(batch.vectors)
        infos.extend(batch.infos)
        paths.extend(rel[j] for j in batch.indices)
        out["skipped"].extend((rel_of.get(str(s.path), str(s.path)), s.reason) for s in batch.skipped)
    if paths:  # the client holds the folder's lock for this run; the shard is committed by it
        store.write_shard(vdir, store_id, np.concatenate(vecs), rows_from_infos(infos), paths, token=token)
    out.update(count=len(paths), seconds=time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------- building
@dataclass
class DaskReport:
    """What a Dask indexing run did (an :class:`~revsearch.index.UpdateReport` plus the partitions).

    Attributes
    ----------
    report : UpdateReport
        ``added`` / ``updated`` hold the images embedded in this run, ``unchanged`` those found in
        shards written by an earlier run, ``removed`` those dropped, ``skipped`` unreadable files.
    partitions : int
        Number of partitions (shards) of the collection.
    reused : int
        Partitions whose shard already existed (not embedded again).
    workers : int
        Workers the cluster had at the start.
    tasks : list of dict
        Per partition: ``number``, ``token``, ``count``, ``seconds``, ``pid`` of the worker, ``reused``.
    """

    report: UpdateReport
    partitions: int = 0
    reused: int = 0
    workers: int = 0
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line."""
        return (
            f"{self.report.summary()}; {self.partitions} partitions ({self.reused} reused) on {self.workers} workers"
        )


def build_index_dask(
    dataset_dir: str | os.PathLike,
    vector_dir: str | os.PathLike,
    model: str | Embedder = "resnet50",
    *,
    weights: str | os.PathLike | None = "imagenet",
    precision: str = "float32",
    client: Any = None,
    n_workers: int = 2,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    batch_size: int = 32,
    read_workers: int | None = 2,
    retries: int = 2,
    prune: bool = False,
    exclude: Sequence[str] | None = None,
    follow_links: str | None = None,
    progress: bool = True,
    _hook: Callable[[int, str], None] | None = None,
) -> tuple[Index, DaskReport]:
    """Index a dataset folder on a Dask cluster; the result is the same index a single process builds.

    Parameters
    ----------
    dataset_dir : path
        Folder of images (searched recursively); the same path must work on every worker.
    vector_dir : path
        Index folder (created if needed), on storage every worker can write to. An existing
        index there must have been made with the same model; its rows are replaced by the new
        shards (partitions already written under the same token are kept, not embedded again).
    model : str or Embedder, default "resnet50"
        A named model, or an Embedder of a named model (its options are used on the workers).
    weights : {"imagenet", None} or path
        Used when ``model`` is a name. A weights file must be at the same path on the workers.
    precision : {"float32", "bfloat16"}
    client : distributed.Client, str or None
        A client, a scheduler address, ``"local"`` (a new local cluster of ``n_workers``
        processes), or None (the default client, else a new local cluster); see :func:`dask_client`.
    n_workers : int, default 2
        Worker processes of a new local cluster.
    partition_size : int, default 512
        Average images per partition (one task and one shard each).
    batch_size : int, default 32
        Images per model call on a worker.
    read_workers : int, optional
        Image-reading threads per task (default 2).
    retries : int, default 2
        Times a failed partition task is retried by the scheduler. (A partition whose worker
        dies is rescheduled by Dask as well, up to ``distributed.scheduler.allowed-failures``.)
    prune : bool, default False
        Confirm an update that removes all rows, or more than half of them (otherwise refused
        before anything is written, as :func:`revsearch.indexing.update_folder` does).
    exclude : sequence of str, optional
        Exclusion patterns, recorded in the index (None: the recorded ones); see
        :func:`revsearch.indexing.update_folder`.
    follow_links : {"inside", "all", "none"}, optional
        Which symbolic links are followed, recorded in the index (None: the recorded choice,
        ``"inside"`` for a new index); see :func:`revsearch.indexing.update_folder`.
    progress : bool, default True
        ``tqdm.auto`` progress bar over images.
    _hook : callable, optional
        For tests only: called as ``_hook(partition_number, token)`` at the start of each
        partition task, on the worker (e.g. to kill it).

    Returns
    -------
    index : Index
    report : DaskReport

    Raises
    ------
    ModelMismatchError
        If ``vector_dir`` holds an index made by another model.
    RevsearchError
        If partitions still fail after their retries; the finished ones are kept, so running
        again resumes.
    OptionalDependencyError
        If Dask is not installed.
    """
    from tqdm.auto import tqdm

    from .embedding import Embedder, get_embedder
    from .images import SkippedFile
    from .images import path_excluded
    from .index import Index
    from .indexing import UpdateReport, check_prune, index_fields, refresh_ann, refresh_augmentation, scan_dataset

    distributed = _distributed()
    t0 = time.perf_counter()
    dataset = Path(dataset_dir).resolve()
    folder = Path(vector_dir).resolve()
    emb = model if isinstance(model, Embedder) else get_embedder(model, weights=weights, precision=precision)
    emb_args = _embedder_args(emb)
    spec = emb.spec
    dim = int(spec["dim"])
    if exclude is None:  # the index's recorded exclusions (and .revsearchignore, always)
        exclude = store.read_manifest(folder).exclude if store.exists(folder) else []
    exclude = [exclude] if isinstance(exclude, str) else [str(p) for p in exclude]
    if follow_links is None:  # as recorded (see revsearch.indexing.update_folder)
        follow_links = (store.read_manifest(folder).follow_links if store.exists(folder) else None) or "inside"
    scan = scan_dataset(dataset, folder, exclude, follow_links=follow_links)
    rel = scan.rel
    report = UpdateReport(skipped=list(scan.skipped))
    stats = scan.stats()
    parts = partition_files(rel, partition_size)
    tokens = [partition_token(spec, rel[p.start : p.stop], stats[p.start : p.stop]) for p in parts]
    if not store.exists(folder) and rel:
        emb.keras_model  # noqa: B018  (the weights load here first: none reachable, nothing written)
    with store.writing(folder) as w:
        old, problems = w.open_committed()
        for problem in problems:
            logger.warning("repairing the index in %s: %s; its images are embedded again", folder, problem)
        if old is not None and len(old):
            Index(old).check_compatible(spec)
        old_paths = {p for sh in old.shards for p in sh.paths} if old is not None else set()
        kept = set(rel)
        report.removed = sorted(p for p in old_paths if p not in kept)
        recorded = old.manifest.dataset_absolute if old is not None else None
        on_purpose = sum(1 for p in report.removed if path_excluded(p, scan.patterns))
        check_prune(folder, dataset, len(old_paths), len(report.removed) - on_purpose, len(rel), recorded, prune)
        ours = {name for tok in tokens for name in store.shard_file_names(w.store_id, tok).values()}
        if w.manifest is None or w.needs_migration:  # record the store id (in the names workers write) first
            w.commit(spec=spec if w.manifest is None else None, complete=False if w.manifest is None else None,
                     protect=ours)
        results: dict[int, dict[str, Any]] = {}
        todo = []
        for i, tok in enumerate(tokens):
            ref = store.find_shard(folder, w.store_id, tok, dim)
            if ref is not None:
                results[i] = {"number": i, "token": tok, "count": ref.count, "reused": True, "skipped": [],
                              "seconds": 0.0, "ref": ref}
            else:
                todo.append(i)
        logger.info("%d partitions, %d to embed, %d already written", len(parts), len(todo), len(parts) - len(todo))
        errors: list[tuple[int, BaseException]] = []
        with dask_client(client, n_workers=n_workers) as c:
            workers = len(_worker_addresses(c))
            if todo:
                c.register_plugin(_warm_plugin(emb_args))  # build the model on each worker, once, at start
            run = secrets.token_hex(4)
            futures = {}
            for i in todo:
                p = parts[i]
                fut = c.submit(
                    _embed_partition, i, tokens[i], w.store_id, str(folder), str(dataset), rel[p.start : p.stop],
                    emb_args, spec, batch_size, read_workers, _hook, key=f"revsearch-embed-{tokens[i]}-{run}",
                    retries=retries, pure=False,
                )
                futures[fut] = i
            with tqdm(total=sum(len(parts[i]) for i in todo), desc="indexing (dask)", unit="img",
                      disable=not progress) as bar:
                for fut in distributed.as_completed(list(futures)):
                    i = futures[fut]
                    try:
                        results[i] = fut.result()
                    except Exception as e:  # keep going: finished partitions are kept for a rerun
                        errors.append((i, e))
                        logger.error("partition %d (%s) failed: %s", i, tokens[i], e)
                    bar.update(len(parts[i]))
        hashes = {r["model_hash"] for r in results.values() if r.get("model_hash")}
        if len(hashes) > 1:
            raise RevsearchError(
                f"the workers built different models (weights {sorted(hashes)}): vectors would not be comparable. "
                "Check that every worker has the same revsearch, Keras and weights file; nothing was committed"
            )
        if errors:
            i, e = errors[0]
            raise RevsearchError(
                f"{len(errors)} of {len(parts)} partitions failed after {retries} retries (partition {i}: "
                f"{type(e).__name__}: {e}); the {len(parts) - len(errors)} finished ones are kept in "
                f"{str(folder)!r}: run again to resume"
            ) from e
        shards = []
        embedded: list[str] = []
        for i, p in enumerate(parts):
            res = results[i]
            for r, reason in res.get("skipped", []):
                report.skipped.append(SkippedFile(dataset / r, reason))
            names = rel[p.start : p.stop]
            if res["reused"]:
                report.unchanged.extend(names)  # approximately: a reused shard's files (unreadable ones excluded below)
            else:
                embedded.extend(names)
            if res["count"]:
                shards.append(store.ShardRef(res["token"], int(res["count"]),
                                             store.shard_file_names(w.store_id, res["token"])))
        for res in results.values():
            res.pop("ref", None)
        skipped_rel = {r for res in results.values() for r, _ in res.get("skipped", [])}
        report.unchanged = [r for r in report.unchanged if r not in skipped_rel]
        embedded = [r for r in embedded if r not in skipped_rel]
        report.added = [r for r in embedded if r not in old_paths]
        report.updated = [r for r in embedded if r in old_paths]
        # an approximate index is stale once the vectors change (stale_ann): extended or rebuilt below
        manifest = w.commit(shards=shards, spec=spec, complete=True, built_with="dask", exclude=exclude,
                            follow_links=follow_links, stale_ann=True, **index_fields(dataset, emb))
        refresh_ann(w, manifest, progress=progress)
        report.augmented = refresh_augmentation(w)
    report.seconds = time.perf_counter() - t0
    out = DaskReport(report, partitions=len(parts), reused=len(parts) - len(todo), workers=workers,
                     tasks=[results[i] for i in sorted(results)])
    logger.info("index %s (dask): %s", folder, out.summary())
    return Index.open(folder), out


def _worker_addresses(c: Any) -> list[str]:
    """Addresses of all the cluster's workers (recent clients list only a few unless asked for all)."""
    try:
        takes_n = "n_workers" in inspect.signature(c.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        takes_n = False
    info = c.scheduler_info(n_workers=-1) if takes_n else c.scheduler_info()
    return sorted(info.get("workers", {}))


# ---------------------------------------------------------------------------------------- searching
_MMAPS: dict[str, np.ndarray] = {}


def _search_group(
    folder: str, entries: list[tuple[str, int, int]], dim: int, queries: np.ndarray, k: int, exclude: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over a contiguous group of shards on a worker; rows are global."""
    from .search import topk_cosine

    shards = []
    for name, count, _ in entries:
        path = str(Path(folder) / name)
        vec = _MMAPS.get(path)
        if vec is None:
            vec = np.load(path, mmap_mode="r", allow_pickle=False)
            if len(_MMAPS) > 4096:
                _MMAPS.clear()
            _MMAPS[path] = vec
        if vec.shape != (count, dim):
            raise RevsearchError(f"shard {path!r} holds {vec.shape}, the manifest says ({count}, {dim})")
        shards.append(vec)
    start = entries[0][2]
    stop = entries[-1][2] + entries[-1][1]
    local = [r - start for r in exclude if start <= r < stop]
    scores, rows = topk_cosine(shards, queries, k, exclude=local)
    return scores, rows + start


def search_dask(
    index_or_dir: Index | str | os.PathLike,
    vectors: np.ndarray,
    k: int = 9,
    *,
    client: Any = None,
    exclude: Sequence[int] | None = None,
    tasks: int | None = None,
    n_workers: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k over a sharded index, computed on a Dask cluster.

    Shards are grouped into contiguous runs of about equal size; each task scores one group on
    a worker (reading its memory-mapped shard files; the same group goes to the same worker
    each time, so its pages stay cached there), and the client merges the per-group top-k.
    Ties are broken by row number, as in :func:`revsearch.search.topk_cosine`, so the result
    equals ``index.topk(vectors, k, exact=True)``.

    Parameters
    ----------
    index_or_dir : Index or path
        The index; its folder must be readable by the workers at the same path.
    vectors : numpy.ndarray
        Shape (dim,) or (b, dim), L2-normalised float32.
    k : int, default 9
    client : distributed.Client, str or None
        See :func:`dask_client`.
    exclude : sequence of int, optional
        Rows never to return.
    tasks : int, optional
        Number of shard groups (default: twice the workers, at most the number of shards).
    n_workers : int, default 2
        Workers of a new local cluster.

    Returns
    -------
    scores : numpy.ndarray
        Shape (b, k') float32, best first.
    rows : numpy.ndarray
        Shape (b, k') int64.
    """
    from .index import Index
    from .search import as_queries

    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    index = index_or_dir if isinstance(index_or_dir, Index) else Index.open(index_or_dir)
    if len(index) == 0:
        raise RevsearchError(f"the index in {str(index.folder)!r} is empty: index some images first")
    k = min(int(k), len(index))  # never more places than rows
    q, _ = as_queries(vectors, index.dim)
    entries, offset = [], 0
    for s in index.snapshot.shards:
        if s.count:
            entries.append((s.ref.files["vectors"], s.count, offset))
        offset += s.count
    excl = sorted({int(r) for r in (exclude or ())})
    with dask_client(client, n_workers=n_workers) as c:
        addrs = _worker_addresses(c)
        n_tasks = max(1, min(len(entries), tasks or 2 * max(1, len(addrs))))
        groups = _split_even(entries, n_tasks)
        qf = c.scatter(q, broadcast=True, hash=False)  # a fresh key: a same-valued one may be being released
        futs = [
            c.submit(_search_group, str(index.folder.resolve()), g, index.dim, qf, k, excl,
                     workers=[addrs[j % len(addrs)]] if addrs else None, allow_other_workers=True, pure=False)
            for j, g in enumerate(groups)
        ]
        parts = c.gather(futs)
    scores = np.concatenate([p[0] for p in parts], axis=1)
    rows = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return (np.ascontiguousarray(np.take_along_axis(scores, order, axis=-1), np.float32),
            np.ascontiguousarray(np.take_along_axis(rows, order, axis=-1), np.int64))


def _split_even(entries: list[tuple[str, int, int]], parts: int) -> list[list[tuple[str, int, int]]]:
    """Cut a list of (token, count, offset) into ``parts`` contiguous groups of about equal rows."""
    total = sum(e[1] for e in entries)
    groups: list[list[tuple[str, int, int]]] = [[]]
    acc = 0
    for e in entries:
        if groups[-1] and acc >= total * len(groups) / parts and len(groups) < parts:
            groups.append([])
        groups[-1].append(e)
        acc += e[1]
    return groups

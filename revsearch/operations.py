"""The operations layer: each job a front end does, as one function.

The command line, the notebook, the widgets and the demo call only these (each command line
subcommand parses its arguments, makes one call here and prints what comes back); so does
:func:`revsearch.reverse_image_search`. Each operation opens the index and resolves its embedder
from the manifest once, here, instead of each front end doing it its own way:

* :func:`build_index` / :func:`update_index`: index a dataset folder, or bring an index up to date
  (on this machine or a Dask cluster);
* :func:`search`: find the images most similar to a query of any kind (an image file, URL, bytes
  or picture; a vector; more kinds register themselves with :func:`register_query_kind`), exact or
  approximate, with query expansion, database augmentation, rotations, a scope (``under``,
  ``exclude``) or on a Dask cluster;
* :func:`find_duplicates`: groups of near-duplicate images;
* :func:`evaluate`: retrieval quality on a labelled folder, or near-duplicate recall.

:class:`Index` here is the package's ``revsearch.Index``: the read-only view
(:class:`revsearch.index.Index`) plus ``build`` / ``update`` / ``update_folder`` / ``from_vectors``,
kept for code written against earlier versions; they call the functions of this layer (so the
read-only view never imports the writer above it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import index as _index
from .embedding import Embedder, get_embedder, preprocessing_options
from .errors import ImageReadError, IndexDamagedError, IndexNotFoundError, RevsearchError
from .images import ImageSource, load_image
from .indexing import UpdateReport
from .search import Match

logger = logging.getLogger(__name__)

__all__ = [
    "Index",
    "IndexingResult",
    "IncompatibleOptionsError",
    "Query",
    "ImageQuery",
    "TextQuery",
    "VectorQuery",
    "as_query",
    "register_query_kind",
    "open_index",
    "open_for_writing",
    "resolve_embedder",
    "build_index",
    "update_index",
    "search",
    "search_index",
    "find_duplicates",
    "evaluate",
    "tune_expansion",
    "import_legacy",
    "build_ann",
    "drop_ann",
    "ann_info",
]


class IncompatibleOptionsError(ValueError):
    """Options that do not work together; the message names them as the keyword arguments are named."""


# ---------------------------------------------------------------------------------------- the index
class Index(_index.Index):
    """A searchable collection of image vectors in a folder: ``revsearch.Index``.

    The read-only view :class:`revsearch.index.Index` (open, search, topk, matches...) with the
    writing conveniences of earlier versions, which call :func:`build_index` /
    :func:`update_index` (the functions new code should call).
    """

    @classmethod
    def build(
        cls,
        dataset_dir: str | os.PathLike,
        vector_dir: str | os.PathLike,
        embedder: Embedder | str = "resnet50",
        **kwargs: Any,
    ) -> tuple[Index, UpdateReport]:
        """Index every image of a folder, or bring an existing index of it up to date.

        The writer of :func:`build_index` with this embedder as given (see
        :func:`revsearch.indexing.update_folder` for the keyword arguments).

        Returns
        -------
        index : Index
        report : UpdateReport
        """
        from .indexing import update_folder

        index, report = update_folder(dataset_dir, vector_dir, embedder, **kwargs)
        return cls(index.snapshot), report

    update_folder = build

    def update(self, dataset_dir: str | os.PathLike | None = None, **kwargs: Any) -> UpdateReport:
        """Bring this index up to date with its dataset folder; this Index then reads the new state.

        Parameters
        ----------
        dataset_dir : path, optional
            Default: the folder recorded in the index.
        **kwargs
            As :func:`revsearch.indexing.update_folder` (``embedder`` defaults to the index's own).

        Returns
        -------
        UpdateReport
        """
        base = dataset_dir if dataset_dir is not None else self.dataset_dir
        if base is None:
            raise RevsearchError("the index does not record its dataset folder: pass dataset_dir")
        emb = kwargs.pop("embedder", None) or self.embedder()
        _, report = Index.build(base, self.folder, emb, **kwargs)
        self.reload()  # this Index now reads the new state
        return report

    @classmethod
    def from_vectors(
        cls,
        vector_dir: str | os.PathLike,
        vectors: np.ndarray,
        paths: Sequence[str],
        spec: dict[str, Any],
        **kwargs: Any,
    ) -> Index:
        """Write a new index from vectors made elsewhere (see :func:`revsearch.indexing.index_from_vectors`)."""
        from .indexing import index_from_vectors

        return cls(index_from_vectors(vector_dir, vectors, paths, spec, **kwargs).snapshot)


def _public(index: _index.Index) -> Index:
    return index if isinstance(index, Index) else Index(index.snapshot)


def open_index(vector_dir: str | os.PathLike | _index.Index) -> Index:
    """Open an existing index (memory-mapped); an open one is returned as it is.

    Raises
    ------
    IndexNotFoundError, IndexFormatError, IndexDamagedError
    """
    if isinstance(vector_dir, _index.Index):
        return _public(vector_dir)
    return Index.open(vector_dir)


def open_for_writing(vector_dir: str | os.PathLike) -> Index | None:
    """The index an indexing run will update: None if there is none yet; only its manifest (no rows)
    if its shard files are damaged (indexing again repairs it, with the model the manifest records)."""
    if not Index.exists(vector_dir):
        return None
    try:
        return Index.open(vector_dir)
    except IndexDamagedError:
        return Index.open_manifest(vector_dir)


def resolve_embedder(
    existing: _index.Index | None,
    model: Any = None,
    *,
    weights: str | os.PathLike | None = "imagenet",
    backend: str | None = None,
    precision: str | None = None,
    resolution: int | None = None,
    scales: Sequence[int] | None = None,
) -> Embedder:
    """The embedder an operation uses with an index that may exist: decided here, once.

    The index's own embedder (the model and preprocessing its manifest records) when ``model``
    is None or names the index's model with the same weights; otherwise one built from ``model``
    (default ``"resnet50"``), which the index may then refuse. ``resolution`` / ``scales`` make
    the model (the index's, if it has one and ``model`` does not name another) at those input
    sizes. ``backend`` and ``precision`` change what computes the vectors, not which vectors are
    comparable.

    Parameters
    ----------
    existing : Index or None
    model : str, Embedder, keras.Model or None
    weights : {"imagenet", None} or path
    backend : {"auto", "keras", "openvino"}, optional
    precision : {"float32", "bfloat16", "float16", "int8"}, optional
    resolution : int, optional
    scales : sequence of int, optional

    Returns
    -------
    Embedder
    """
    if resolution is not None or scales is not None:
        name = model
        options: dict[str, Any] = {}
        if existing is not None and (name is None or (isinstance(name, str) and name.lower() == existing.spec["model"])):
            name = existing.spec["model"]
            options = preprocessing_options(existing.spec.get("preprocessing", ""))
            options.pop("resolution", None), options.pop("scales", None)
        emb = get_embedder(
            name or "resnet50", weights=weights, precision=precision, resolution=resolution, scales=scales, **options
        )
    else:
        # precision never changes which vectors are comparable: naming the index's model keeps its recorded
        # preprocessing whatever precision is asked for (applied below)
        emb = _index.resolve_embedder(existing, model, weights=weights)
    if backend is not None or precision is not None:
        emb = emb.variant(backend=backend, precision=precision)
    return emb


# ---------------------------------------------------------------------------------------- indexing
@dataclass
class IndexingResult:
    """What :func:`build_index` / :func:`update_index` did; unpacks as ``index, report``.

    Attributes
    ----------
    index : Index
        The index, opened at its new state.
    report : UpdateReport
        Images added, updated, removed, unchanged, moved, copied, skipped.
    dask : revsearch.distributed.DaskReport or None
        Partitions and workers, when a Dask cluster did the work.
    """

    index: Index
    report: UpdateReport
    dask: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.index, self.report))

    def summary(self) -> str:
        """One line: what was done."""
        return self.dask.summary() if self.dask is not None else self.report.summary()


def build_index(
    dataset_dir: str | os.PathLike,
    vector_dir: str | os.PathLike,
    model: str | Embedder | Any = None,
    *,
    weights: str | os.PathLike | None = "imagenet",
    backend: str | None = None,
    precision: str | None = None,
    resolution: int | None = None,
    scales: Sequence[int] | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    prune: bool = False,
    exclude: Sequence[str] | None = None,
    dask: Any = None,
    dask_workers: int = 2,
    partition_size: int = 512,
    progress: bool = True,
    expansion: Any = None,
    **kwargs: Any,
) -> IndexingResult:
    """Index every image of a folder, or bring the existing index of it up to date.

    Only new or changed images are embedded; see :func:`revsearch.indexing.update_folder` for
    what an update keeps, refuses and repairs.

    Parameters
    ----------
    dataset_dir : path
        Folder of images (searched recursively).
    vector_dir : path
        Index folder (created if needed).
    model : str, Embedder or keras.Model, optional
        Default: the model the index was built with, or ``"resnet50"`` for a new index.
    weights : {"imagenet", None} or path, default "imagenet"
    backend : {"auto", "keras", "openvino"}, optional
        What runs the model (default: auto).
    precision : {"float32", "bfloat16", "float16", "int8"}, optional
        Compute precision (vectors are float32 either way).
    resolution : int, optional
        Input side in pixels.
    scales : sequence of int, optional
        Multi-scale input sides.
    batch_size : int, optional
        Images per model call (default: the embedder's).
    workers : int, optional
        Image-reading threads.
    prune : bool, default False
        Confirm an update that removes all or most of the indexed images.
    exclude : sequence of str, optional
        Exclusion patterns (None keeps the recorded ones).
    dask : distributed.Client, str or None
        Embed on a Dask cluster: a client, a scheduler address or ``"local"``.
    dask_workers : int, default 2
        Worker processes of ``dask="local"``.
    partition_size : int, default 512
        Images per Dask task and shard.
    progress : bool, default True
    expansion : Expansion or bool, optional
        The search expansion recorded in the index, whose database-side augmentation every
        update stores (:class:`revsearch.rerank.Expansion`): None keeps the recorded one (a new
        index: the default, on), False records none.
    **kwargs
        More options of :func:`revsearch.indexing.update_folder` (``checkpoint_every``...).

    Returns
    -------
    IndexingResult
        Unpacks as ``index, report``.
    """
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    embedder = resolve_embedder(
        open_for_writing(vector_dir), model, weights=weights, backend=backend, precision=precision,
        resolution=resolution, scales=scales,
    )
    batch_size = batch_size or embedder.batch_size
    if dask:
        from .distributed import build_index_dask

        index, dreport = build_index_dask(
            dataset_dir, vector_dir, embedder, client=dask, n_workers=dask_workers, partition_size=partition_size,
            batch_size=batch_size, prune=prune, exclude=exclude, progress=progress, **kwargs,
        )
        if expansion is not None:  # recorded (and its augmentation stored) on this machine
            from . import store
            from .indexing import refresh_augmentation

            with store.writing(vector_dir, create=False) as w:
                dreport.report.augmented += refresh_augmentation(w, expansion=expansion)
            index = _index.Index.open(vector_dir)
        result = IndexingResult(_public(index), dreport.report, dreport)
    else:
        from .indexing import update_folder

        index, report = update_folder(
            dataset_dir, vector_dir, embedder, batch_size=batch_size, workers=workers, prune=prune, exclude=exclude,
            progress=progress, expansion=expansion, **kwargs,
        )
        result = IndexingResult(_public(index), report)
    if len(result.index):
        result.index.use_embedder(embedder)  # searches reuse the model that is loaded now
    return result


def update_index(
    vector_dir: str | os.PathLike | _index.Index,
    dataset_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> IndexingResult:
    """Bring an index up to date with its dataset folder (the one it records, unless given).

    Parameters
    ----------
    vector_dir : path or Index
    dataset_dir : path, optional
    **kwargs
        As :func:`build_index`.

    Returns
    -------
    IndexingResult
    """
    folder = vector_dir.folder if isinstance(vector_dir, _index.Index) else Path(vector_dir)
    if dataset_dir is None:
        existing = open_for_writing(folder)
        if existing is None:
            raise IndexNotFoundError(f"no revsearch index in {str(folder)!r}: build one first with build_index")
        dataset_dir = existing.dataset_dir
        if dataset_dir is None:
            raise RevsearchError("the index does not record its dataset folder: pass dataset_dir")
    result = build_index(dataset_dir, folder, **kwargs)
    if isinstance(vector_dir, _index.Index):  # an open Index moves to the new state
        vector_dir.reload()
    return result


# ---------------------------------------------------------------------------------------- queries
class Query:
    """One kind of query: turns itself into vectors comparable with an index.

    A new kind (e.g. a text query for a text-image model) subclasses this, implements
    :meth:`vectors`, and registers how to recognise its values with :func:`register_query_kind`.

    Attributes
    ----------
    label : str
        How messages and JSON output name the query.
    """

    label: str = "query"

    def vectors(self, index: _index.Index, embedder: Embedder | None) -> np.ndarray:
        """The query vector(s), shape (b, dim) float32 (L2-normalised by the search).

        Parameters
        ----------
        index : Index
            The index searched (its own embedder when ``embedder`` is None).
        embedder : Embedder or None
        """
        raise NotImplementedError

    def picture(self) -> Any:
        """The query as a picture for the result figure (a PIL image), or None if it has none."""
        return None

    #: Whether the search-side options that re-embed the query (``rotations``) apply.
    is_image: bool = False
    #: Whether the index's expansion (query expansion, database-side augmentation) applies by default: it
    #: was chosen on image queries; a query of another kind (words) is searched plainly unless asked.
    expands_by_default: bool = True


@dataclass
class ImageQuery(Query):
    """A query image: a file path, an http(s) URL, the bytes of an image file, a PIL image or an
    (H, W, 3) uint8 array. A file or URL is read once (URL: with a time limit and size cap) and
    decoded before any model loads, so a bad query fails first."""

    source: ImageSource
    label: str = "query"
    _data: Any = field(default=None, repr=False)
    _image: Any = field(default=None, repr=False)

    is_image = True

    def __post_init__(self) -> None:
        from .remote import read_query

        if isinstance(self.source, (str, os.PathLike)):
            self.label = str(self.source)
        label = self.label if isinstance(self.source, (str, os.PathLike)) else None
        try:
            self._data = read_query(self.source)
            self._image = load_image(self._data, label=label)
        except ImageReadError as e:
            raise ImageReadError(f"bad query: {e}") from None

    @property
    def data(self) -> Any:
        """What is embedded: the bytes read from a file or URL, or the image as given."""
        return self._data

    def vectors(self, index: _index.Index, embedder: Embedder | None) -> np.ndarray:
        emb = embedder if embedder is not None else index.embedder()
        index.check_compatible(emb.spec)
        return np.atleast_2d(emb.embed(self._data))

    def picture(self) -> Any:
        return self._image


@dataclass
class VectorQuery(Query):
    """A query vector (or a batch): shape (dim,) or (b, dim), made by the index's model."""

    vector: Any
    label: str = "vector"

    def vectors(self, index: _index.Index, embedder: Embedder | None) -> np.ndarray:
        v = np.atleast_2d(np.asarray(self.vector, np.float32))
        if v.ndim != 2 or v.shape[1] != index.dim:
            raise ValueError(f"a query vector of shape {np.shape(self.vector)} does not fit an index of {index.dim}-d vectors")
        return v


@dataclass
class TextQuery(Query):
    """Words to find photos by (``"a red car at night"``), or a list of them: for an index built with an
    image-and-text model (:data:`revsearch.models.TEXT_MODELS`, e.g. ``"clip-vit-b32"``), whose text tower
    puts them in the space of its image vectors. A string is never taken for words by :func:`as_query`
    (it is a file path there): wrap it in a TextQuery.
    """

    text: str | Sequence[str]
    label: str = "text"

    expands_by_default = False  # the expansion default was measured for image queries, not words

    def __post_init__(self) -> None:
        from .clip import clean_texts

        single = isinstance(self.text, str)
        texts = clean_texts(self.text)  # an empty or non-string query fails here, before any model loads
        self.text = texts[0] if single else texts
        self.label = f"“{texts[0]}”" if single else f"{len(texts)} texts"

    def check(self, index: _index.Index) -> None:
        """Raise a one-line :class:`ModelMismatchError` unless ``index`` was built with an image-and-text model."""
        from .clip import supports_text

        model = index.spec["model"]
        if not supports_text(model):
            from .errors import ModelMismatchError
            from .models import TEXT_MODELS

            raise ModelMismatchError(
                f"the index in {str(index.folder)!r} was built with {model}, an image model: it cannot be searched "
                f"by words. Build an index with an image-and-text model ({', '.join(sorted(TEXT_MODELS))}) in another "
                f"folder: revsearch index {index.dataset_dir or 'DATASET_DIR'} NEW_VECTOR_DIR --model clip-vit-b32"
            )

    def vectors(self, index: _index.Index, embedder: Embedder | None) -> np.ndarray:
        from .clip import embed_text

        self.check(index)
        emb = embedder if embedder is not None else index.embedder()
        index.check_compatible(emb.spec)
        return np.atleast_2d(embed_text(emb, self.text))


#: How values are recognised as queries: (test, kind), tried in order (see :func:`register_query_kind`).
_QUERY_KINDS: list[tuple[Callable[[Any], bool], Callable[[Any], Query]]] = []


def register_query_kind(test: Callable[[Any], bool], make: Callable[[Any], Query], *, first: bool = True) -> None:
    """Teach :func:`as_query` (and so :func:`search`) a new kind of query value.

    Parameters
    ----------
    test : callable
        ``test(value)`` is True for values of this kind.
    make : callable
        ``make(value)`` returns the :class:`Query`.
    first : bool, default True
        Try this kind before the ones registered earlier.
    """
    entry = (test, make)
    if first:
        _QUERY_KINDS.insert(0, entry)
    else:
        _QUERY_KINDS.append(entry)


def _is_vector(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim in (1, 2) and np.issubdtype(value.dtype, np.floating)


register_query_kind(_is_vector, VectorQuery, first=False)


def as_query(value: Any) -> Query:
    """The :class:`Query` of a value: a Query as it is, a float vector (shape (dim,) or (b, dim)) as a
    :class:`VectorQuery`, a registered kind, else an image (:class:`ImageQuery`)."""
    if isinstance(value, Query):
        return value
    for test, make in _QUERY_KINDS:
        if test(value):
            return make(value)
    return ImageQuery(value)


# ---------------------------------------------------------------------------------------- searching
def _relative_folder(index: _index.Index, under: str | os.PathLike | None, dataset_dir: Any) -> str | None:
    """``under``: a folder relative to the dataset folder, or a path to a folder inside it."""
    if not under:
        return None
    base = Path(dataset_dir) if dataset_dir else index.dataset_dir
    p = Path(under)
    if base is not None and (p.is_absolute() or p.is_dir()):
        try:
            return p.resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            if p.is_absolute():
                raise RevsearchError(f"under={str(under)!r} is not inside the dataset folder {str(base)!r}") from None
    return p.as_posix()


def search(
    index: str | os.PathLike | _index.Index,
    query: Any,
    k: int = 9,
    *,
    embedder: Embedder | None = None,
    model: Any = None,
    weights: str | os.PathLike | None = "imagenet",
    backend: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    exact: bool = False,
    qe: int | None = None,
    alpha: float | None = None,
    dba: Any = None,
    dba_alpha: float | None = None,
    rotations: bool = False,
    under: str | os.PathLike | None = None,
    exclude: Sequence[str] | None = None,
    dask: Any = None,
    expand: Any = None,
) -> list[Match]:
    """Find the indexed images most similar to a query.

    Parameters
    ----------
    index : path or Index
        The index folder, or an open index.
    query : Query, image or vector
        An image file path, an http(s) URL, the bytes of an image file, a PIL image, an (H, W, 3)
        uint8 array, a float vector of shape (dim,) (the index's model made it), or any
        :class:`Query` (see :func:`as_query`).
    k : int, default 9
    embedder : Embedder, optional
        What embeds the query; default: the index's own (resolved from its manifest), or the one
        ``model`` names.
    model : str, optional
        Another model that is compatible with the index (e.g. the index's with other weights files).
    weights : {"imagenet", None} or path
        With ``model``.
    backend : {"auto", "keras", "openvino"}, optional
        What embeds the query (any backend searches any index).
    dataset_dir : path, optional
        Where the images are now (default: as recorded in the index).
    exact : bool, default False
        Exact search even where an approximate (FAISS) index exists.
    qe : int, optional
        Alpha query expansion from the ``qe`` best matches (0: off; default: the index's, 2).
    alpha : float, optional
        Query-expansion exponent (default: the index's, 3).
    dba : int or DatabaseAugmentation, optional
        Database-side augmentation with ``dba`` neighbours (0: off; default: the index's, 2), the
        one stored in the index (:meth:`revsearch.index.Index.augmentation`).
    dba_alpha : float, optional
    rotations : bool, default False
        Also search with the query rotated by 90/180/270 degrees (image queries).
    under : path, optional
        Search only images in this folder (relative to the dataset folder, or a path inside it).
    exclude : sequence of str, optional
        Leave out images whose relative path matches one of these patterns.
    dask : distributed.Client, str or None
        Exact search on a Dask cluster (address or ``"local"``): a plain search, without expansion.
    expand : bool or Expansion, optional
        Query expansion and database-side augmentation, on by default: None/True the index's
        :attr:`~revsearch.index.Index.expansion` (``qe=2, dba=2, alpha=3`` unless re-tuned), False a
        plain cosine search of the stored vectors, or an :class:`revsearch.rerank.Expansion`.
        ``qe``, ``alpha``, ``dba``, ``dba_alpha`` change single settings of it.

    Returns
    -------
    list of Match
        Best first (one query: for a batch of query vectors, the first one's).

    Raises
    ------
    IncompatibleOptionsError
        If options that do not work together are combined (one line says which).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if isinstance(exclude, str):
        exclude = [exclude]
    from .rerank import DatabaseAugmentation, Expansion, resolve_expansion

    given_aug = dba if isinstance(dba, DatabaseAugmentation) else None
    given = {n: v for n, v in (("qe", qe), ("alpha", alpha), ("dba", None if given_aug is not None else dba),
                               ("dba_alpha", dba_alpha)) if v is not None}
    if expand is False and (given or given_aug is not None):
        raise IncompatibleOptionsError("expand=False turns expansion off: leave out qe, alpha, dba and dba_alpha")
    asked = bool(given) or given_aug is not None or (isinstance(expand, Expansion) and expand.active)
    if dask and (asked or rotations):
        raise IncompatibleOptionsError("qe, dba and rotations search on this machine: leave out dask to use them")
    if rotations and (under or exclude):
        raise IncompatibleOptionsError("rotations do not work with under/exclude yet: use one or the other")
    if dask and (under or exclude):
        raise IncompatibleOptionsError("under and exclude do not work with dask yet: leave out dask to use them")
    q = as_query(query)  # a bad query fails here, before the index's model loads
    idx = open_index(index)
    if rotations and not q.is_image:
        raise IncompatibleOptionsError("rotations need an image query")
    if embedder is None and (model is not None or backend is not None):
        embedder = resolve_embedder(idx, model, weights=weights) if model is not None else idx.embedder()
        if backend is not None:
            embedder = embedder.variant(backend=backend)
    from .rerank import NO_EXPANSION

    default = idx.expansion if q.expands_by_default else NO_EXPANSION
    exp = Expansion(**{**resolve_expansion(expand, default).to_dict(), **given})
    if rotations:
        from .rerank import search_images

        return search_images(  # type: ignore[return-value]
            idx, q.data, k, qe=exp.qe, alpha=exp.alpha, dba=given_aug if given_aug is not None else exp.dba,  # type: ignore[attr-defined]
            dba_alpha=exp.dba_alpha, rotations=True, embedder=embedder, dataset_dir=dataset_dir, exact=exact,
        )
    from .embedding import l2_normalize

    vectors = l2_normalize(q.vectors(idx, embedder).astype(np.float32, copy=False))
    if dask:  # a plain exact search on the cluster
        from .distributed import search_dask

        scores, rows = search_dask(idx, vectors, k, client=dask)
    elif given_aug is not None:
        from .rerank import search_expanded

        scores, rows = search_expanded(
            idx, vectors, k, qe=exp.qe, alpha=exp.alpha, dba=given_aug, exact=exact,
            under=_relative_folder(idx, under, dataset_dir), exclude_paths=exclude,
        )
    else:  # the index's expansion (stored augmentation) unless turned off
        scores, rows = idx.expanded_topk(
            vectors, k, exact=exact, under=_relative_folder(idx, under, dataset_dir), exclude_paths=exclude, expand=exp
        )
    return idx.matches(scores, rows, dataset_dir)[0]


#: The package's name for :func:`search` (``revsearch.search`` is the module of exact top-k).
search_index = search


# ---------------------------------------------------------------------------------------- duplicates, quality
def find_duplicates(index: str | os.PathLike | _index.Index, threshold: float | None = None, **kwargs: Any) -> Any:
    """Groups of near-duplicate images of an index (or across two with ``against=``).

    See :func:`revsearch.duplicates.find_duplicates` for the options.

    Returns
    -------
    revsearch.duplicates.DuplicateReport
    """
    from . import duplicates

    return duplicates.find_duplicates(index, threshold, **kwargs)


def evaluate(
    index: str | os.PathLike | _index.Index,
    dataset_dir: str | os.PathLike | None = None,
    *,
    near_duplicates: bool = False,
    k: int = 9,
    **kwargs: Any,
) -> Any:
    """Measure an index's retrieval quality: class retrieval on a labelled folder, or (with
    ``near_duplicates=True``) how often edited copies of its photos find the original.

    Parameters
    ----------
    index : path or Index
    dataset_dir : path, optional
        The folder the index was built from (default: as recorded).
    near_duplicates : bool, default False
    k : int, default 9
    **kwargs
        Options of :func:`revsearch.evaluate.evaluate_index` (``layout``, ``expand``, ``qe``, ``alpha``,
        ``dba``, ``dba_alpha``: with none of them, exactly what a search of the index does by default)
        or :func:`revsearch.evaluate.evaluate_near_duplicates` (``sample``, ``seed``, ``batch_size``,
        ``progress``).

    Returns
    -------
    ClassRetrievalReport or NearDuplicateReport
    """
    from . import evaluate as ev

    idx = open_index(index)
    if near_duplicates:
        if kwargs.get("qe") or kwargs.get("dba"):
            raise IncompatibleOptionsError(
                "qe and dba are evaluated on class retrieval: leave out near_duplicates to use them"
            )
        for name in ("qe", "alpha", "dba", "dba_alpha", "layout", "expand"):
            kwargs.pop(name, None)
        return ev.evaluate_near_duplicates(idx, dataset_dir, k=k, **kwargs)
    for name in ("sample", "seed", "batch_size"):
        kwargs.pop(name, None)
    return ev.evaluate_index(idx, dataset_dir, k=k, **kwargs)


def tune_expansion(index: str | os.PathLike | _index.Index, dataset_dir: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """Score search-expansion settings on a labelled collection, best first (see
    :func:`revsearch.evaluate.tune_expansion`); record the winner with ``build_index(..., expansion=...)``.

    Returns
    -------
    list of (Expansion, ClassRetrievalReport)
    """
    from . import evaluate as ev

    return ev.tune_expansion(open_index(index), dataset_dir, **kwargs)


# ---------------------------------------------------------------------------------------- other jobs
def import_legacy(legacy_dir: str | os.PathLike, vector_dir: str | os.PathLike, **kwargs: Any) -> tuple[Index, Any]:
    """Convert the original project's vector files into a new index (see :func:`revsearch.legacy.import_legacy`).

    Returns
    -------
    index : Index
    legacy : revsearch.legacy.LegacyVectors
        What was read, with the files skipped and why.
    """
    from . import legacy

    index, read = legacy.import_legacy(legacy_dir, vector_dir, **kwargs)
    return _public(index), read


def build_ann(index: str | os.PathLike | _index.Index, **kwargs: Any) -> dict[str, Any]:
    """Build (or rebuild) the approximate (FAISS) index of an index (see :func:`revsearch.ann.build_ann`).

    Returns
    -------
    dict
        Its description, as the manifest records it.
    """
    from . import ann

    return ann.build_ann(index, **kwargs)


def drop_ann(index: str | os.PathLike | _index.Index) -> bool:
    """Remove the approximate index of an index (search becomes exact); return whether there was one."""
    from . import ann

    return ann.drop_ann(index)


def ann_info(index: str | os.PathLike | _index.Index) -> dict[str, Any] | None:
    """The description of an index's approximate index (None if it has none)."""
    from . import ann

    return ann.ann_info(index)

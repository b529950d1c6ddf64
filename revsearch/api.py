"""The one-call entry point, with the original notebook's signature (over :mod:`revsearch.operations`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from .embedding import Embedder
from .errors import IndexNotFoundError, RevsearchError
from .images import ImageSource
from .indexing import UpdateReport
from .operations import ImageQuery, Index, Query, TextQuery, build_index, open_for_writing, open_index, resolve_embedder, search

logger = logging.getLogger(__name__)

__all__ = ["reverse_image_search", "search_text", "SearchResults"]


class SearchResults(list):
    """The matches of one query, best first (a list of :class:`~revsearch.search.Match`).

    Attributes
    ----------
    figure : matplotlib.figure.Figure or None
        The result picture, if ``show`` or ``save_path`` asked for it.
    report : UpdateReport or None
        What indexing did, if ``generate=True``.
    index : Index
        The index searched.
    """

    figure: Any = None
    report: UpdateReport | None = None
    index: Index | None = None

    @property
    def paths(self) -> list[Path]:
        """The matched files, best first."""
        return [m.path for m in self]

    @property
    def scores(self) -> list[float]:
        """The cosine scores, best first."""
        return [m.score for m in self]


def reverse_image_search(
    query: ImageSource | None,
    model: str | Embedder | Any = None,
    dataset_dir: str | os.PathLike | None = None,
    vector_dir: str | os.PathLike | None = None,
    generate: bool = False,
    *,
    k: int = 9,
    weights: str | os.PathLike | None = "imagenet",
    show: bool = False,
    save_path: str | os.PathLike | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    expand: Any = None,
    text: str | None = None,
) -> SearchResults:
    """Find the images most similar to ``query``.

    The first call (``generate=True``) embeds every image in ``dataset_dir`` and stores the
    vectors in ``vector_dir``; a later ``generate=True`` only embeds what is new or changed and
    drops what was deleted. ``generate=False`` reuses the stored vectors and embeds only the query.

    Parameters
    ----------
    query : str, os.PathLike, bytes, PIL.Image.Image or numpy.ndarray
        The query image: a file path, an http(s) URL of an image (downloaded with a time limit
        and a size cap, see :func:`revsearch.remote.fetch_image`), the bytes of an image file (as
        an upload widget gives), a Pillow image or an (H, W, 3) uint8 RGB array.
    model : str, Embedder or keras.Model, optional
        ``"resnet50"``, ``"mobilenet"``, ``"resnet50-seed"`` (or another name of
        :data:`revsearch.MODELS`: ``"efficientnetv2-b0"``, ``"efficientnetv2-s"``, ``"convnext-tiny"``), a Keras model whose output is one
        vector per image, or an :class:`~revsearch.embedding.Embedder`. Default: the model the
        index was built with, or ``"resnet50"`` for a new index.
    dataset_dir : path, optional
        The folder of images. Needed with ``generate=True``; otherwise the folder recorded in the
        index is used unless this is given.
    vector_dir : path
        The index folder.
    generate : bool, default False
        Build or update the index first.
    k : int, default 9
        Number of results.
    weights : {"imagenet", None} or path, default "imagenet"
        Weights of a named model (``None``: seeded random weights, for tests).
    show : bool, default False
        Display the result picture (in a notebook) and keep it in ``results.figure``.
    save_path : path, optional
        Save the result picture there (PNG, JPEG, PDF...).
    batch_size : int, optional
        Images per model call while indexing. Default: the embedder's (32 on a CPU, larger on a
        GPU).
    progress : bool, default True
        Show progress bars while indexing.
    expand : bool or Expansion, optional
        Query expansion and database-side augmentation (:class:`revsearch.Expansion`), on by
        default: the index's recorded expansion (``qe=2, dba=2, alpha=3`` unless the index was
        built with another). ``False``: a plain cosine search of the stored vectors. The
        augmentation is stored in the index by every ``generate=True``.
    text : str, optional
        Search by words instead of by image (``query=None``): e.g. ``"a red car at night"``, on an
        index built with a CLIP-family model (``model="clip-vit-b32"``, the default of a new index
        searched by text). See :func:`search_text`.

    Returns
    -------
    SearchResults
        A list of ``k`` :class:`~revsearch.search.Match` (path, relpath, score), best first.

    Raises
    ------
    IndexNotFoundError
        If ``generate=False`` and ``vector_dir`` holds no index.
    ModelMismatchError
        If ``model`` is not the one the index was built with.
    ImageReadError
        If the query cannot be read.
    """
    if vector_dir is None:
        raise RevsearchError("vector_dir is required: the folder where the vectors are (or will be) stored")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if text is not None:
        if query is not None:
            raise ValueError("give a query image or text=..., not both")
        q: Query = TextQuery(text)  # an empty text fails here, before any indexing
        existing = open_for_writing(vector_dir) if generate else None
        if model is None and generate and existing is None:
            model = "clip-vit-b32"  # a new index searched by words needs a model with a text tower
        elif model is None and existing is not None:
            q.check(existing)  # an image-only index: one line, before any indexing
    elif query is None:
        raise ValueError("give a query image (or text='words to search for' on a CLIP index)")
    else:
        q = ImageQuery(query)  # read and decoded once: a bad query fails before any indexing
    report = None
    if generate:
        if dataset_dir is None:
            raise RevsearchError("dataset_dir is required with generate=True: the folder of images to index")
        if not Path(dataset_dir).is_dir():
            raise RevsearchError(f"dataset folder {str(dataset_dir)!r} does not exist or is not a folder")
        index, report = build_index(dataset_dir, vector_dir, model, weights=weights, batch_size=batch_size, progress=progress)
    else:
        try:
            index = open_index(vector_dir)
        except IndexNotFoundError as e:
            raise IndexNotFoundError(f"{e} (run reverse_image_search with generate=True first)") from None
    if isinstance(q, TextQuery):
        q.check(index)  # an image-only index: one line, before its model loads
    embedder = resolve_embedder(index, model, weights=weights)
    matches = search(index, q, k, embedder=embedder, dataset_dir=dataset_dir, expand=expand)
    results = SearchResults(matches)
    results.report, results.index = report, index
    if show or save_path is not None:
        from .display import display_figure, plot_results, save_figure

        results.figure = plot_results(q.picture(), matches)
        if isinstance(q, TextQuery):  # words: the text above the grid
            results.figure.suptitle(q.label, fontsize=12, fontweight="bold")
        if save_path is not None:
            save_figure(results.figure, save_path)
            logger.info("saved the result picture to %s", save_path)
        if show and not display_figure(results.figure):
            logger.info("show=True outside a notebook: the picture is in results.figure (or use save_path)")
    return results



def search_text(
    text: str,
    vector_dir: str | os.PathLike | Index,
    k: int = 9,
    *,
    dataset_dir: str | os.PathLike | None = None,
    exact: bool = False,
    under: str | os.PathLike | None = None,
    exclude: Sequence[str] | None = None,
    qe: int = 0,
    show: bool = False,
    save_path: str | os.PathLike | None = None,
) -> SearchResults:
    """Find the images that best match a sentence, in an index built with an image-and-text model.

    A :class:`~revsearch.operations.TextQuery` through :func:`revsearch.operations.search`, as the
    command line's ``revsearch search --text`` and the widget's Words box.

    Parameters
    ----------
    text : str
        E.g. ``"a red car at night"``.
    vector_dir : path or Index
        The index folder (built with e.g. ``model="clip-vit-b32"``), or an open index.
    k : int, default 9
        Number of results.
    dataset_dir : path, optional
        Where the images are now (default: as recorded in the index).
    exact : bool, default False
        Exact search even where an approximate index exists.
    under : path, optional
        Search only images in this folder (relative to the dataset folder).
    exclude : sequence of str, optional
        Leave out images whose relative path matches one of these patterns.
    qe : int, default 0
        Alpha query expansion from the ``qe`` best matches (0: off).
    show : bool, default False
        Display the result picture (in a notebook) and keep it in ``results.figure``.
    save_path : path, optional
        Save the result picture there.

    Returns
    -------
    SearchResults
        ``k`` :class:`~revsearch.search.Match` (path, relpath, score), best first.

    Raises
    ------
    ModelMismatchError
        If the index was built with an image-only model (one line: which model, what to do).
    WeightsUnavailableError
        If the model's preset cannot be loaded (one line: where it comes from, what to do offline).
    """
    q = TextQuery(text)
    index = open_index(vector_dir)
    q.check(index)
    matches = search(index, q, k, dataset_dir=dataset_dir, exact=exact, under=under, exclude=exclude, qe=qe)
    results = SearchResults(matches)
    results.index = index
    if show or save_path is not None:
        from .display import display_figure, plot_results, save_figure

        results.figure = plot_results(None, matches)
        results.figure.suptitle(q.label, fontsize=12, fontweight="bold")
        if save_path is not None:
            save_figure(results.figure, save_path)
            logger.info("saved the result picture to %s", save_path)
        if show and not display_figure(results.figure):
            logger.info("show=True outside a notebook: the picture is in results.figure (or use save_path)")
    return results

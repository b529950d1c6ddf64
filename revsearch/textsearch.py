"""Search an index by words (CLIP-family indexes): ``search_text("a red car at night", "vectors/")``.

A text query is embedded by the index's own text tower (:meth:`revsearch.clip.ClipEmbedder.embed_text`)
and searched like an image query's vector: the same cosine top-k, the same ``under`` / ``exclude_paths``
filters, the same approximate index where one exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from .clip import TEXT_MODELS, embed_text, supports_text
from .errors import IndexNotFoundError, ModelMismatchError
from .index import Index

logger = logging.getLogger(__name__)

__all__ = ["search_text", "check_text_index"]


def check_text_index(index: Index) -> None:
    """Raise a one-line :class:`ModelMismatchError` unless the index was built with a CLIP-family model.

    Parameters
    ----------
    index : Index
    """
    model = index.spec["model"]
    if not supports_text(model):
        raise ModelMismatchError(
            f"the index in {str(index.folder)!r} was built with {model}, an image model: it cannot be searched by "
            f"words. Build a CLIP index for text queries ({', '.join(sorted(TEXT_MODELS))}), in another folder: "
            f"revsearch index {index.dataset_dir or 'DATASET_DIR'} NEW_VECTOR_DIR --model clip-vit-b32"
        )


def search_text(
    text: str | Sequence[str],
    vector_dir: str | os.PathLike | Index,
    k: int = 9,
    *,
    dataset_dir: str | os.PathLike | None = None,
    exact: bool = False,
    under: str | None = None,
    exclude_paths: Sequence[str] | None = None,
    show: bool = False,
    save_path: str | os.PathLike | None = None,
) -> Any:
    """Find the images that best match a sentence, in an index built with a CLIP-family model.

    Parameters
    ----------
    text : str or sequence of str
        E.g. ``"a red car at night"``; a list searches each text (a batch).
    vector_dir : path or Index
        The index folder (built with e.g. ``model="clip-vit-b32"``), or an open :class:`Index`.
    k : int, default 9
        Number of results.
    dataset_dir : path, optional
        Where the images are now (default: as recorded in the index).
    exact : bool, default False
        Force exact search even where an approximate index exists.
    under : str, optional
        Search only images in this folder (relative to the dataset folder).
    exclude_paths : sequence of str, optional
        Leave out images whose relative path matches one of these patterns.
    show : bool, default False
        Display the result picture (in a notebook) and keep it in ``results.figure`` (one text only).
    save_path : path, optional
        Save the result picture there (one text only).

    Returns
    -------
    SearchResults or list of SearchResults
        For one text: ``k`` :class:`~revsearch.search.Match` (path, relpath, score), best first, as
        :func:`revsearch.reverse_image_search` returns them; for a list of texts, one per text.

    Raises
    ------
    IndexNotFoundError
        If ``vector_dir`` holds no index.
    ModelMismatchError
        If the index was built with an image-only model (one line: which model, what to do).
    WeightsUnavailableError
        If the model's preset cannot be loaded (one line: where it comes from, what to do offline).
    """
    from .api import SearchResults

    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    if isinstance(vector_dir, Index):
        index = vector_dir
    else:
        try:
            index = Index.open(vector_dir)
        except IndexNotFoundError as e:
            raise IndexNotFoundError(f"{e} (build it with a CLIP model first: model='clip-vit-b32')") from None
    check_text_index(index)
    single = isinstance(text, str)
    vectors = embed_text(index.embedder(), text)
    found = index.search_vectors(
        vectors, k, dataset_dir=dataset_dir, exact=exact, under=under, exclude_paths=exclude_paths
    )
    batches = [found] if single else found
    out = []
    for matches in batches:
        results = SearchResults(matches)  # type: ignore[arg-type]
        results.index = index
        out.append(results)
    if single and (show or save_path is not None):
        from .display import plot_results, save_figure

        fig = plot_results(None, out[0])
        fig.suptitle(f"“{text}”", fontsize=12, fontweight="bold")
        out[0].figure = fig
        if save_path is not None:
            save_figure(fig, save_path)
            logger.info("saved the result picture to %s", save_path)
        from .notebook import display_figure

        if show and not display_figure(fig):
            logger.info("show=True outside a notebook: the picture is in results.figure (or use save_path)")
    return out[0] if single else out

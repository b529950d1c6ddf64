"""revsearch: reverse image search for notebooks and Python code.

>>> from revsearch import reverse_image_search
>>> matches = reverse_image_search("query.jpg", "resnet50", "photos/", "vectors/", generate=True)

The operations behind it (:mod:`revsearch.operations`), as the command line calls them:

>>> from revsearch import build_index, search_index
>>> index, report = build_index("photos/", "vectors/")
>>> matches = search_index(index, "query.jpg", k=9)

Importing revsearch is cheap: TensorFlow loads the first time a model is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

from .errors import (  # noqa: E402  (light, no heavy imports)
    DamagedVectorsError,
    DatasetLayoutError,
    DownloadError,
    ImageReadError,
    IndexDamagedError,
    IndexFormatError,
    IndexNotFoundError,
    LegacyFormatError,
    ModelMismatchError,
    OptionalDependencyError,
    OutsideFoldersError,
    RevsearchError,
    StorageFullError,
    UnknownModelError,
    UnsafePickleError,
    UpdateRefusedError,
    WeightsUnavailableError,
)

# Public names and the module that defines each; loaded on first access (PEP 562).
_LAZY = {
    "reverse_image_search": "api",
    "search_text": "api",
    "TextQuery": "operations",
    "SearchResults": "api",
    "Embedder": "embedding",
    "get_embedder": "embedding",
    "MODELS": "models",
    "Index": "operations",
    "UpdateReport": "indexing",
    "build_index": "operations",
    "update_index": "operations",
    "open_index": "operations",
    "search_index": "operations",
    "IndexingResult": "operations",
    "Query": "operations",
    "ImageQuery": "operations",
    "VectorQuery": "operations",
    "Match": "search",
    "topk_cosine": "search",
    "plot_results": "display",
    "load_image": "images",
    "find_images": "images",
    "import_legacy": "legacy",
    "search_images": "rerank",
    "DatabaseAugmentation": "rerank",
    "Expansion": "rerank",
    "find_duplicates": "duplicates",
    "DuplicateReport": "duplicates",
    "plot_duplicates": "duplicates",
}

__all__ = sorted(
    [
        *_LAZY,
        "__version__",
        "RevsearchError",
        "ImageReadError",
        "IndexNotFoundError",
        "IndexFormatError",
        "IndexDamagedError",
        "StorageFullError",
        "UpdateRefusedError",
        "ModelMismatchError",
        "WeightsUnavailableError",
        "UnknownModelError",
        "LegacyFormatError",
        "UnsafePickleError",
        "DownloadError",
        "DatasetLayoutError",
        "OptionalDependencyError",
        "OutsideFoldersError",
        "DamagedVectorsError",
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'revsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .api import SearchResults, reverse_image_search, search_text
    from .display import plot_results
    from .duplicates import DuplicateReport, find_duplicates, plot_duplicates
    from .embedding import Embedder, get_embedder
    from .models import MODELS
    from .images import find_images, load_image
    from .indexing import UpdateReport
    from .operations import (
        ImageQuery,
        Index,
        IndexingResult,
        Query,
        TextQuery,
        VectorQuery,
        build_index,
        open_index,
        search_index,
        update_index,
    )
    from .legacy import import_legacy
    from .rerank import DatabaseAugmentation, Expansion, search_images
    from .search import Match, topk_cosine

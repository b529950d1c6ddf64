"""revsearch: reverse image search for notebooks and Python code.

>>> from revsearch import reverse_image_search
>>> matches = reverse_image_search("query.jpg", "resnet50", "photos/", "vectors/", generate=True)

The operations behind it (:mod:`revsearch.operations`), as the command line calls them:

>>> from revsearch import build_index, search_index
>>> index, report = build_index("photos/", "vectors/")
>>> matches = search_index(index, "query.jpg", k=9)

Importing revsearch is cheap: TensorFlow loads the first time a model is used.

The code, by layer (lowest first; each imports only from the layers below it):

- ``core/``: errors, version, measured figures, safety rules, quiet console start-up
- ``media/``: finding and reading images, query links, image edits, the original project's data
- ``models/``: the model catalogue, inference backends, the embedder, CLIP
- ``storage/`` and ``retrieval/``: the index folder on disk (``store``), exact/approximate search and
  re-ranking, the read-only ``index``, writing it (``indexing``), Dask clusters, the 2021 format
- ``quality/`` and ``duplicates/``: retrieval quality, near-duplicate finding
- ``operations``: build, update, search, find duplicates, evaluate; ``api``: the one-call entry point
- front ends: ``cli``, ``notebook`` (with ``colab``), ``widgets``, ``display``, ``demo``

A module's old top-level path (``revsearch.store``, ``revsearch.index``, ...) still imports, with a
:class:`DeprecationWarning` naming the new one; it is the same module object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .core import errors as _errors  # noqa: E402  (light, no heavy imports)
from .core.version import __version__

from .core.errors import (  # noqa: E402  (light, no heavy imports)
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
    "Embedder": "models.embedding",
    "get_embedder": "models.embedding",
    "MODELS": "models.catalogue",
    "Index": "operations",
    "UpdateReport": "storage.indexing",
    "build_index": "operations",
    "update_index": "operations",
    "open_index": "operations",
    "search_index": "operations",
    "IndexingResult": "operations",
    "Query": "operations",
    "ImageQuery": "operations",
    "VectorQuery": "operations",
    "Match": "retrieval.exact",
    "topk_cosine": "retrieval.exact",
    "plot_results": "display",
    "load_image": "media.images",
    "find_images": "media.images",
    "import_legacy": "storage.legacy",
    "search_images": "retrieval.rerank",
    "DatabaseAugmentation": "retrieval.rerank",
    "Expansion": "retrieval.rerank",
    "find_duplicates": "duplicates",
    "DuplicateReport": "duplicates",
    "plot_duplicates": "duplicates",
}

__all__ = sorted([*_LAZY, "__version__", *_errors.__all__])


#: Modules that moved into sub-packages: old name (``revsearch.<old>``) -> new path below ``revsearch``.
#: (``revsearch.models``, the catalogue before, is now the models package: see :mod:`revsearch.models`.)
_MOVED = {
    "errors": "core.errors",
    "version": "core.version",
    "measured": "core.measured",
    "safety": "core.safety",
    "console": "core.console",
    "images": "media.images",
    "reader": "media.reader",
    "remote": "media.remote",
    "edits": "media.edits",
    "data": "media.data",
    "backends": "models.backends",
    "embedding": "models.embedding",
    "clip": "models.clip",
    "store": "storage.store",
    "index": "storage.index",
    "indexing": "storage.indexing",
    "distributed": "storage.distributed",
    "legacy": "storage.legacy",
    "thumbs": "storage.thumbs",
    "search": "retrieval.exact",
    "ann": "retrieval.ann",
    "rerank": "retrieval.rerank",
    "evaluate": "quality.evaluate",
}


def _caller_stacklevel() -> int:
    """The ``stacklevel`` (counted from the caller) of the first frame outside the import machinery
    and this file: the user's import, so that the warning names their line. (:mod:`warnings` itself
    skips the frames of ``importlib._bootstrap`` when it counts: they are not counted here either.)"""
    level, frame = 1, sys._getframe(1)
    skip = (__file__, importlib.__file__)
    while frame.f_back is not None:
        frame = frame.f_back
        filename = frame.f_code.co_filename
        if "importlib" in filename and "_bootstrap" in filename:
            continue
        level += 1
        if filename not in skip:
            break
    return level


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module under its old name: the same module object, with a DeprecationWarning.

    ``import revsearch.store`` (or ``from revsearch.store import X``) gives ``revsearch.storage.store``
    itself, so ``revsearch.store is revsearch.storage.store`` and its state is shared. One finder for
    every moved module: no file is left at the old place.
    """

    revsearch_moved = True

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> ModuleType:
        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}: import it from there (the old path will be removed)",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ = spec: put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        alias_spec = module.__spec__
        if alias_spec is not None and alias_spec.loader_state is not None:
            module.__spec__ = alias_spec.loader_state  # already executed under its real name


if not any(getattr(finder, "revsearch_moved", False) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before any other finder (an editable install of an older revsearch)


def __getattr__(name: str) -> Any:
    if name in _MOVED:  # revsearch.store without importing it first: the old path, with its warning
        return importlib.import_module(f"{__name__}.{name}")
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
    from .models.embedding import Embedder, get_embedder
    from .models.catalogue import MODELS
    from .media.images import find_images, load_image
    from .storage.indexing import UpdateReport
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
    from .storage.legacy import import_legacy
    from .retrieval.rerank import DatabaseAugmentation, Expansion, search_images
    from .retrieval.exact import Match, topk_cosine

"""Named exceptions raised by revsearch.

Every error a user can cause derives from :class:`RevsearchError`, so callers (and the
command line) can catch one class and show its message, which always says what was wrong,
with which file, and what to do about it.
"""

from __future__ import annotations

__all__ = [
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


class RevsearchError(Exception):
    """Base class of every error revsearch raises on purpose."""


class ImageReadError(RevsearchError, ValueError):
    """An image (a query, or a file while indexing) could not be decoded."""


class IndexNotFoundError(RevsearchError, FileNotFoundError):
    """No index exists in the given vector folder."""


class IndexFormatError(RevsearchError, ValueError):
    """The index folder exists but its files are damaged or of an unknown format."""


class IndexDamagedError(IndexFormatError):
    """A file of the index is missing or damaged; indexing the dataset folder again repairs it.

    Attributes
    ----------
    folder : pathlib.Path
        The index folder.
    detail : str
        What is wrong, e.g. which file is missing.
    """

    def __init__(self, folder: object, detail: str) -> None:
        from pathlib import Path

        self.folder = Path(str(folder))
        self.detail = detail
        super().__init__(
            f"the index in {str(folder)!r} is damaged: {detail}. Index its dataset folder again to repair it "
            f"(Index.build(DATASET_DIR, {str(folder)!r}), or reverse_image_search(..., generate=True))"
        )


class StorageFullError(RevsearchError, OSError):
    """The disk (or quota) of the index folder is full; the index keeps its last committed state."""


class UpdateRefusedError(RevsearchError, ValueError):
    """An update would remove all or most of an index's rows; nothing was changed (``prune=True`` confirms)."""


class ModelMismatchError(RevsearchError, ValueError):
    """A query vector was made by another model, preprocessing, weights or dimension than the index."""


class WeightsUnavailableError(RevsearchError, OSError):
    """Model weights could not be downloaded or loaded."""


class UnknownModelError(RevsearchError, ValueError):
    """A model name that revsearch does not know."""


class LegacyFormatError(RevsearchError, ValueError):
    """A vector file of the original project could not be read."""


class UnsafePickleError(LegacyFormatError):
    """A pickle asked to load something other than plain arrays, dicts and strings."""


class DownloadError(RevsearchError, OSError):
    """A download or archive extraction failed."""


class DatasetLayoutError(RevsearchError, ValueError):
    """A dataset folder does not have the layout an operation needs (e.g. class labels)."""


class OptionalDependencyError(RevsearchError, ImportError):
    """An optional extra (faiss, dask, ...) is needed but not installed."""


class OutsideFoldersError(RevsearchError, ValueError):
    """A file (manifest, move log, vector file...) named a path outside the folders named for this run.

    Nothing was read, moved or created there (see :func:`revsearch.safety.confine`).
    """


class DamagedVectorsError(RevsearchError, ValueError):
    """Vectors with NaN or infinite values, or not of unit length, were refused (nothing was written)."""

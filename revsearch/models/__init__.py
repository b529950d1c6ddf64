"""Models: from images (and words) to vectors.

- :mod:`~revsearch.models.catalogue`: the models revsearch knows by name (``MODELS``) and their defaults.
- :mod:`~revsearch.models.backends`: inference backends (Keras, OpenVINO), devices, compute precision.
- :mod:`~revsearch.models.embedding`: :class:`~revsearch.models.embedding.Embedder`, a model plus its
  exact preprocessing: images to L2-normalised vectors.
- :mod:`~revsearch.models.clip`: CLIP-family models (an image tower and a text tower).

Importing this package imports none of its modules. (Before the catalogue moved here,
``revsearch.models`` was the catalogue module itself: its names, e.g. ``revsearch.models.MODELS``,
still resolve, with a :class:`DeprecationWarning` naming ``revsearch.models.catalogue``.)
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    catalogue = importlib.import_module(".catalogue", __name__)  # light: no model library
    if name in catalogue.__all__:
        warnings.warn(
            f"revsearch.models.{name} moved to revsearch.models.catalogue.{name}: import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(catalogue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

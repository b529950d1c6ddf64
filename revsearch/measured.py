"""Figures measured by the benchmarks that the library's messages quote: their one source.

Each value names the docs page (and benchmark) it comes from; ``tests/test_docs.py`` checks that
the docs and the notebook quote the same numbers, so a new measurement is changed here and there
together.
"""

from __future__ import annotations

__all__ = ["NOTEBOOK_VECTORS"]

#: docs/notebook.md, "The notebook's vectors" (``benchmarks/notebook_vectors.py``, MobileNet's ImageNet weights on
#: the 1,360 Oxford 17 Flowers photos laid out like the original data): leave-one-out class retrieval
#: with the original project's pipeline and with today's default one.
NOTEBOOK_VECTORS: dict[str, dict[str, float]] = {
    "original": {"precision@9": 0.305, "mAP": 0.145, "recall@1": 0.446},
    "default": {"precision@9": 0.853, "mAP": 0.564, "recall@1": 0.929},
}

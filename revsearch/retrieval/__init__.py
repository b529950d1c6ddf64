"""Searching vectors: exact top-k, approximate (FAISS) search, and search-side re-ranking.

- :mod:`~revsearch.retrieval.exact`: exact cosine top-k (:class:`~revsearch.retrieval.exact.Match`).
- :mod:`~revsearch.retrieval.ann`: approximate nearest-neighbour search with FAISS, stored in the index.
- :mod:`~revsearch.retrieval.rerank`: query expansion, database-side augmentation, rotated queries.

Importing this package imports none of its modules.
"""

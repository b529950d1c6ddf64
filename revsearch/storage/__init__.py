"""Index folders: the on-disk format, the read-only index, writing it, clusters, the original format.

- :mod:`~revsearch.storage.store`: the index folder on disk; the one module that names, writes, reads
  and deletes its files, and the only one that knows the manifest's keys.
- :mod:`~revsearch.storage.index`: :class:`~revsearch.storage.index.Index`, a read-only view of one
  committed state of an index folder, and its searches.
- :mod:`~revsearch.storage.indexing`: scanning a dataset folder, the incremental writer, merging shards.
- :mod:`~revsearch.storage.distributed`: indexing and searching on a Dask cluster.
- :mod:`~revsearch.storage.legacy`: reading the original (2021) project's vector files, safely.

The store sits below :mod:`revsearch.retrieval` (whose ANN index it stores); the index and the
writers above it (see LAYERS in tests/test_layers.py). Importing this package imports none of its modules.
"""

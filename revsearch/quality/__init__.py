"""Measuring retrieval quality.

- :mod:`~revsearch.quality.evaluate`: class retrieval on a labelled folder, near-duplicate recall.

Importing this package imports none of its modules.
"""

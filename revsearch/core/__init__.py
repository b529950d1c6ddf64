"""The bottom layer: named errors, the version, measured figures, the safety rules, quiet start-up.

- :mod:`~revsearch.core.errors`: every exception a user can cause (all derive from ``RevsearchError``).
- :mod:`~revsearch.core.version`: the package version (the store records it in every manifest).
- :mod:`~revsearch.core.measured`: figures the benchmarks measured that messages quote, their one source.
- :mod:`~revsearch.core.safety`: what a file may make revsearch do (confinement, safe names, checked numbers).
- :mod:`~revsearch.core.console`: TensorFlow's C++ start-up noise kept off the terminal.

Importing this package imports none of its modules.
"""

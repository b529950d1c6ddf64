"""The package version, at the bottom of the layers (the store records it in every manifest)."""

__version__ = "0.1.0"

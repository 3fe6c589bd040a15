"""Exceptions raised by relreps: each names the problem with the input."""

from __future__ import annotations


class RelrepsError(ValueError):
    """Invalid input: wrong shape, dtype, non-finite values, degenerate anchors, mismatched sets."""


class AnchorError(RelrepsError):
    """Anchors are missing, too few, degenerate or do not correspond across spaces."""


class MissingDependencyError(ImportError):
    """An optional package needed for this feature is not installed."""

    def __init__(self, package: str, feature: str, install: str | None = None) -> None:
        hint = install or f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed. "
                         f"Install it with: {hint}  (or `make setup`, which installs all extras)")
        self.package = package


class DataNotFoundError(FileNotFoundError):
    """An offline data set or model is not where relreps looks for it."""


class DownloadUnavailableError(RuntimeError):
    """A code path would download data or weights; relreps works offline only."""

"""Exceptions raised by relreps: each names the argument or file and what was expected.

Every error relreps raises on purpose is a :class:`RelrepsError` (a ``ValueError``); the
subclasses also derive from the built-in exception a Python user would expect (``TypeError`` for a
wrong type, ``ImportError`` for a missing package, ``FileNotFoundError`` for missing data), so
both ``except RelrepsError`` and the usual ``except TypeError`` work. The command line prints any
of them as one line and exits with status 2.

This module imports nothing heavy (the CLI imports it for ``--help``).
"""

from __future__ import annotations

__all__ = ["RelrepsError", "InputTypeError", "ShapeError", "NonFiniteError", "NumericalError",
           "AnchorError", "NotFittedError", "FormatError", "RunFolderError", "OptionError",
           "MissingDependencyError", "DataNotFoundError", "DownloadUnavailableError"]


class RelrepsError(ValueError):
    """Invalid input: wrong shape, dtype, range, non-finite values, degenerate anchors."""


class InputTypeError(RelrepsError, TypeError):
    """An argument has the wrong type or dtype (a string for a number, complex data, ...)."""


class ShapeError(RelrepsError):
    """An array has the wrong number of dimensions, rows or columns, or sizes do not match."""


class NonFiniteError(RelrepsError):
    """An input holds NaN or infinite values."""


class NumericalError(RelrepsError, ArithmeticError):
    """A result cannot be represented in the input's dtype (overflow), so none is returned."""


class AnchorError(RelrepsError):
    """Anchors are missing, too few, degenerate or do not correspond across spaces."""


class NotFittedError(RelrepsError, AttributeError):
    """An estimator or model is used before `fit` (scikit-learn's NotFittedError is a subclass
    of this error where scikit-learn is loaded; see :mod:`relreps._sklearn`)."""


class FormatError(RelrepsError):
    """A file cannot be read: unknown format, missing key or column, corrupt or hostile content."""


class RunFolderError(RelrepsError):
    """An output folder cannot be used: not writable, or holds another run's results."""


class OptionError(RelrepsError):
    """An option that the experiment or command does not know, or a value it cannot take."""


class MissingDependencyError(RelrepsError, ImportError):
    """An optional package needed for this feature is not installed."""

    def __init__(self, package: str, feature: str, install: str | None = None) -> None:
        hint = install or f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed. "
                         f"Install it with: {hint}  (or `make setup`, which installs all extras)")
        self.package = package


class DataNotFoundError(RelrepsError, FileNotFoundError):
    """An offline data set, model or input file is not where relreps looks for it."""


class DownloadUnavailableError(RelrepsError, RuntimeError):
    """A code path would download data or weights; relreps works offline only."""

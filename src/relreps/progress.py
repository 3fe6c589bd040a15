"""Progress bars for long work (tqdm), silenced with RELREPS_QUIET=1 through tqdm's own
``disable=`` switch (tqdm's ``TQDM_DISABLE=1`` and other ``TQDM_*`` settings work too)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["quiet", "progress"]


def quiet() -> bool:
    """True when RELREPS_QUIET is set to anything but "" or "0"."""
    return os.environ.get("RELREPS_QUIET", "") not in ("", "0")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             leave: bool = False) -> Iterable[T]:
    """`iterable` with a progress bar on stderr; no bar (same items) when RELREPS_QUIET is set."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True,
                disable=quiet())

"""Progress bars for long work (tqdm), silenced with RELREPS_QUIET=1."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("RELREPS_QUIET", "") not in ("", "0")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             leave: bool = False) -> Iterable[T]:
    """Wrap an iterable in a progress bar on stderr unless RELREPS_QUIET is set."""
    if quiet():
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True)

"""Offline loaders for the data sets listed in shared/DATA.md.

Every loader reads local files only. A missing source raises `DataNotFoundError` naming what is
missing and how to install it; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from relreps.errors import DataNotFoundError

__all__ = ["shared_data_dir"]


def shared_data_dir(required: str | None = None) -> Path:
    """The folder holding the shared offline data (`shared/data`).

    Looked up in order: $RELREPS_DATA; a `shared/data` folder beside or above the current
    directory; beside or above this package's source tree. With `required`, that sub-path must
    exist too.
    """
    candidates: list[Path] = []
    env = os.environ.get("RELREPS_DATA")
    if env:
        candidates.append(Path(env))
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for parent in [start, *start.parents]:
            candidates.append(parent / "shared" / "data")
    for c in candidates:
        if c.is_dir() and (required is None or (c / required).exists()):
            return c
    what = f"'{required}' in " if required else ""
    raise DataNotFoundError(
        f"could not find {what}the shared data folder. Set RELREPS_DATA to the folder that holds "
        "ag_news/, trec/, cifar10/ and planetoid/ (shared/data beside the repository).")

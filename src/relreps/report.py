"""Result rows -> aggregated tables (mean +- std over seeds) in Markdown, and figure helpers."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def aggregate(rows: Iterable[Mapping[str, Any]], by: Sequence[str], value: str
              ) -> list[dict[str, Any]]:
    """Group rows by the `by` keys and summarise `value`: mean, std (ddof=0), n. Order kept."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in by)].append(float(r[value]))
    out = []
    for key, vals in groups.items():
        arr = np.asarray(vals, dtype=float)
        out.append({**dict(zip(by, key)), "mean": float(arr.mean()),
                    "std": float(arr.std()), "n": int(arr.size)})
    return out


def fmt_mean_std(mean: float, std: float | None = None, digits: int = 2, scale: float = 1.0
                 ) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def pivot_table(rows: Iterable[Mapping[str, Any]], index: str, columns: str, value: str,
                digits: int = 2, scale: float = 1.0, extra_by: Sequence[str] = ()) -> str:
    """Markdown table of mean ± std of `value`, one row per `index` (+extra_by), one column per
    `columns` value."""
    rows = list(rows)
    agg = aggregate(rows, [*extra_by, index, columns], value)
    col_vals = list(dict.fromkeys(r[columns] for r in agg))
    row_keys = list(dict.fromkeys(tuple(r[k] for k in [*extra_by, index]) for r in agg))
    cell = {(tuple(r[k] for k in [*extra_by, index]), r[columns]): r for r in agg}
    body = []
    for rk in row_keys:
        line = list(rk)
        for c in col_vals:
            r = cell.get((rk, c))
            line.append(fmt_mean_std(r["mean"], r["std"] if r["n"] > 1 else None, digits, scale)
                        if r else "-")
        body.append(line)
    return markdown_table([*extra_by, f"{index} \\ {columns}", *col_vals], body)

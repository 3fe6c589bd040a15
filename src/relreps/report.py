"""Result rows -> aggregated tables (mean +- std over seeds) in Markdown, and figure helpers.

:func:`shared_basis` and :func:`plot_shared_bases` are the one implementation of the "every space
on one 2-D basis" figure, used by the demo (``latent_spaces.png``) and ``relreps compare``
(``spaces_2d.png``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from relreps.errors import InputTypeError, ShapeError
from relreps.validation import check_array, check_int, check_same_rows

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


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
    """``"mean ± std"`` (scaled, rounded); only the mean when `std` is None or NaN (a single
    value has no spread); ``"-"`` for a missing or NaN mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
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


# ------------------------------------------------------------------------- shared 2-D basis

def shared_basis(spaces: Mapping[str, Any], reference: str | None = None, *,
                 n_components: int = 2) -> dict[str, Any]:
    """Every space in the coordinates of ONE principal-component basis, fitted on `reference`.

    The basis (the `n_components` leading principal axes of `reference`, default: the first
    space) and the reference's mean are applied unchanged to every other space of the same
    width; nothing is aligned, so a rotation between spaces stays visible. Rows must be the same
    items in every space.

    Returns ``{"reference": name, "coords": {name: (n, n_components) float64 array, or None for
    a space of another width}, "correlation": {name: [Pearson r per axis, None where an axis is
    constant]}}``; ``correlation`` holds every same-width space except the reference: the
    agreement of its coordinates with the reference's, axis by axis (1 when the spaces agree up
    to a translation along the basis, near 0 or negative when they are rotated).

    Raises
    ------
    InputTypeError : `spaces` is not a non-empty mapping; `reference` is not one of its names.
    ShapeError : arrays that are not 2-D, row counts that differ, fewer than 2 rows, or
        `n_components` above the reference's rank limit (min(rows, width)).
    """
    if not isinstance(spaces, Mapping) or not spaces:
        raise InputTypeError("spaces must be a non-empty mapping name -> (n, d) array, got "
                             f"{type(spaces).__name__}")
    arrays = {str(k): np.asarray(_host(check_array(v, f"spaces[{k!r}]", min_rows=2)),
                                 dtype=np.float64) for k, v in spaces.items()}
    check_same_rows(arrays)
    names = list(arrays)
    ref = names[0] if reference is None else reference
    if ref not in arrays:
        raise InputTypeError(f"reference {reference!r} is not one of the spaces ({names})")
    base = arrays[ref]
    n_components = check_int(n_components, "n_components", min_value=1)
    if n_components > min(base.shape):
        raise ShapeError(f"n_components={n_components} exceeds the reference space's shape "
                         f"{base.shape}")
    mean = base.mean(0)
    _, _, vt = np.linalg.svd(base - mean, full_matrices=False)
    basis = vt[:n_components].T
    ref_xy = (base - mean) @ basis
    coords: dict[str, np.ndarray | None] = {}
    corr: dict[str, list[float | None]] = {}
    for name, x in arrays.items():
        if x.shape[1] != base.shape[1]:
            coords[name] = None  # another width: no coordinates on the reference's basis
            continue
        xy = (x - mean) @ basis
        coords[name] = xy
        if name != ref:
            corr[name] = [_pearson(ref_xy[:, c], xy[:, c]) for c in range(n_components)]
    return {"reference": ref, "coords": coords, "correlation": corr}


def _host(x: Any) -> Any:
    from relreps._backend import to_numpy

    return to_numpy(x)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r; None when either side is constant up to float64 rounding (a constant axis
    computed by a matrix product can differ from row to row in its last bits)."""
    for v in (a, b):
        if v.std() <= 64 * np.finfo(np.float64).eps * max(float(np.abs(v).max()), 1e-300):
            return None
    return float(np.corrcoef(a, b)[0, 1])


def plot_shared_bases(fig: Figure, bases: Mapping[str, Mapping[str, Any]], color: Any,
                      names: Sequence[str] | None = None, *, point_size: float = 4) -> Any:
    """Draw :func:`shared_basis` results into `fig`: one row per entry of `bases` (e.g.
    ``{"absolute": ..., "relative": ...}``), one column per space, each panel titled with its
    per-axis correlation to the reference. Points are coloured by `color` (labels: a
    categorical palette; floats: a continuous map). Returns the (rows, columns) array of Axes.
    """
    if not isinstance(bases, Mapping) or not bases:
        raise InputTypeError("bases must be a non-empty mapping kind -> shared_basis() result")
    first = next(iter(bases.values()))
    names = list(first["coords"]) if names is None else list(names)
    color = np.asarray(color)
    categorical = color.dtype.kind not in "f"
    if categorical:
        _, color = np.unique(color, return_inverse=True)
    axes = np.asarray(fig.subplots(len(bases), len(names), squeeze=False))
    for r, (kind, res) in enumerate(bases.items()):
        for c, s in enumerate(names):
            ax = axes[r, c]
            xy = res["coords"].get(s)
            if xy is None:
                ax.text(0.5, 0.5, f"width differs from {res['reference']}:\nno shared basis",
                        ha="center", va="center", transform=ax.transAxes, fontsize=8)
            else:
                ax.scatter(xy[:, 0], xy[:, 1], c=color, s=point_size, linewidths=0,
                           cmap="tab10" if categorical else "viridis")
            title = f"{kind}: {s}"
            corr = res["correlation"].get(s)
            if s == res["reference"]:
                title += "\n(reference: basis fitted here)"
            elif corr is not None and None not in corr:
                title += "\naxis corr " + " / ".join(f"{v:.2f}" for v in corr)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return axes

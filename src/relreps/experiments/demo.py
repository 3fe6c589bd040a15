"""The main job: two networks that differ only in their seed, absolute vs relative.

Two small MLPs are trained on scikit-learn's digits (bundled, offline) with identical data, data
order and hyper-parameters; only the weight initialisation seed differs. Their absolute latent
spaces disagree (neighbourhoods, cosine), their relative spaces agree, and a head trained on one
network's relative space classifies the other network's relative space zero-shot while an absolute
head fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from relreps.experiments.base import Results, RunContext
from relreps.report import fmt_mean_std, markdown_table, plot_shared_bases, shared_basis

NAME = "demo"
DESCRIPTION = "digits: two seeds, absolute vs relative latent spaces and zero-shot stitching"
#: `--opt` keys this experiment reads (none: its sizes are fixed per scale).
OPTIONS: dict[str, str] = {}

_SIZES = {"smoke": {"epochs": 15, "anchors": 64, "seeds": 2},
          "full": {"epochs": 80, "anchors": 128, "seeds": 5}}


def train_encoder(x: np.ndarray, y: np.ndarray, *, seed: int, latent_dim: int = 32,
                  epochs: int = 60, data_seed: int = 0,
                  validation: tuple[np.ndarray, np.ndarray] | None = None, patience: int = 10,
                  record: dict[str, Any] | None = None) -> Any:
    """An MLP encoder trained end to end with a linear classifier; only `seed` sets the weights.

    The data order comes from `data_seed`, shared by both networks, so the seed is the only
    difference between them. With `validation` = (x_val, y_val) (rows held out of the training
    rows, never test rows), `epochs` is a maximum: training stops once the validation
    cross-entropy has not improved for `patience` epochs, and the weights of the best
    validation epoch are restored. `record` (a dict), if given, receives the validation curve,
    the best epoch and the epochs run.
    """
    import copy

    import torch
    from torch import nn

    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, latent_dim))
    head = nn.Linear(latent_dim, int(y.max()) + 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=2e-3)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    gen = torch.Generator().manual_seed(data_seed)
    if validation is not None:
        xv = torch.as_tensor(validation[0], dtype=torch.float32)
        yv = torch.as_tensor(validation[1], dtype=torch.long)
    best: tuple[float, int, Any] = (float("inf"), 0, None)
    curve: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        enc.train()
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), 128):
            idx = perm[s:s + 128]
            loss = nn.functional.cross_entropy(head(enc(xt[idx])), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if validation is None:
            continue
        with torch.no_grad():
            logits = head(enc.eval()(xv))
            v_loss = float(nn.functional.cross_entropy(logits, yv))
            v_acc = float((logits.argmax(1) == yv).float().mean())
        curve.append({"epoch": epoch, "val_loss": v_loss, "val_accuracy": v_acc})
        if v_loss < best[0]:
            best = (v_loss, epoch, copy.deepcopy(enc.state_dict()))
        elif epoch - best[1] >= patience:
            break
    if validation is not None and best[2] is not None:
        enc.load_state_dict(best[2])
    if record is not None:
        record.update({"max_epochs": epochs, "patience": patience if validation is not None
                       else None, "epochs_run": curve[-1]["epoch"] if curve else epochs,
                       "best_epoch": best[1] if validation is not None else epochs,
                       "curve": curve})
    enc.eval()
    return enc


def _encode(enc: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return enc(torch.as_tensor(x, dtype=torch.float32)).numpy()


def _figure(path: Any, bases: dict[str, dict[str, Any]], y: np.ndarray) -> None:
    """Absolute (top) and relative (bottom) spaces of every seed, each row on one shared basis."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    names = list(bases["absolute"]["coords"])  # two seeds: the reference and the other
    fig = Figure(figsize=(3.4 * len(names) + 1, 7))
    plot_shared_bases(fig, bases, y, names, point_size=6)
    corr = {kind: _corr_text(res["correlation"][names[1]]) for kind, res in bases.items()}
    fig.suptitle(f"One 2-D PCA basis per row, fitted on {names[0]} and applied unchanged to the "
                 f"other seed\nper-axis correlation with {names[0]}: absolute "
                 f"{corr['absolute']}, relative {corr['relative']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _corr_text(corr: list[float | None]) -> str:
    """Per-axis correlations as text, e.g. ``"0.86 / -0.16"``."""
    return " / ".join("n/a" if v is None else f"{v:.2f}" for v in corr)


def run(ctx: RunContext) -> Results:
    import torch
    from threadpoolctl import threadpool_limits

    # Tiny matrices: extra threads cost more than they give, badly so on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: RunContext) -> Results:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from relreps.anchors import sample_anchors
    from relreps.metrics import cka, mean_cosine, retrieval_metrics
    from relreps.progress import progress
    from relreps.projection import relative_projection
    from relreps.stitching import stitching_matrix

    cfg = _SIZES[ctx.scale]
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y,
                                              random_state=ctx.seed)
    seeds = (ctx.seed, ctx.seed + 1)
    encs = {f"seed {s}": train_encoder(x_tr, y_tr, seed=s, epochs=cfg["epochs"],
                                       data_seed=ctx.seed)
            for s in progress(seeds, desc="train encoders")}
    spaces = {name: (_encode(e, x_tr), _encode(e, x_te)) for name, e in encs.items()}
    names = list(spaces)
    (a_tr, a_te), (b_tr, b_te) = spaces.values()

    anchor_idx = sample_anchors(a_tr, cfg["anchors"], "stratified", y=y_tr, random_state=ctx.seed)
    rel = {n: relative_projection(te, tr[anchor_idx]) for n, (tr, te) in spaces.items()}
    ra, rb = rel.values()
    rows: list[dict[str, Any]] = []
    k = 10
    for kind, (p, q) in (("absolute", (a_te, b_te)), ("relative", (ra, rb))):
        rm = retrieval_metrics(p, q, k=k)
        rows.append({"table": "similarity", "space": kind, "mean_cosine": mean_cosine(p, q),
                     f"jaccard@{k}": rm["jaccard"], f"mrr@{k}": rm["mrr"],
                     "linear_cka": cka(p, q)})
    sim_table = markdown_table(
        ["space", "mean cosine", f"Jaccard@{k}", f"MRR@{k}", "linear CKA"],
        [[r["space"], f"{r['mean_cosine']:.3f}", f"{r[f'jaccard@{k}']:.3f}",
          f"{r[f'mrr@{k}']:.3f}", f"{r['linear_cka']:.3f}"] for r in rows])

    head_seeds = ctx.seeds(cfg["seeds"])

    def anchors_for(seed: int) -> np.ndarray:
        return sample_anchors(a_tr, cfg["anchors"], "stratified", y=y_tr, random_state=seed)

    stitch = {"absolute": stitching_matrix(spaces, y_tr, y_te, space="absolute",
                                           seeds=head_seeds),
              "relative": stitching_matrix(spaces, y_tr, y_te, anchors=anchors_for,
                                           space="relative", seeds=head_seeds)}
    st_rows = []
    for kind, res in stitch.items():
        summ = res.summary("accuracy")
        st_rows.append([kind, fmt_mean_std(summ["non_stitched_mean"], summ["non_stitched_std"], 1,
                                           100),
                        fmt_mean_std(summ["stitched_mean"], summ["stitched_std"], 1, 100)])
        rows += [{"table": "stitching", **r} for r in res.rows]
    stitch_table = markdown_table(["head on", "same seed (acc %)", "other seed, zero-shot (acc %)"],
                                  st_rows)
    pair_table, pair_rows = _pair_table(stitch)
    rows += pair_rows

    fig = ctx.figure_path("latent_spaces")
    bases = {"absolute": shared_basis({n: te for n, (_, te) in spaces.items()}),
             "relative": shared_basis(rel)}
    _figure(fig, bases, y_te)
    corr = {kind: res["correlation"][names[1]] for kind, res in bases.items()}
    rows += [{"table": "shared_basis", "space": kind, "reference": names[0], "other": names[1],
              **{f"axis{c + 1}_corr": v for c, v in enumerate(vals)}}
             for kind, vals in corr.items()]
    basis_table = markdown_table(
        ["space", *(f"PC{c + 1} correlation" for c in range(2))],
        [[kind, *("n/a" if v is None else f"{v:.3f}" for v in vals)]
         for kind, vals in corr.items()])
    heat = ctx.figure_path("stitching")
    _heatmaps(heat, stitch)

    abs_s, rel_s = stitch["absolute"].summary("accuracy"), stitch["relative"].summary("accuracy")
    summary = {
        "absolute_mrr": rows[0][f"mrr@{k}"], "relative_mrr": rows[1][f"mrr@{k}"],
        "absolute_mean_cosine": rows[0]["mean_cosine"],
        "relative_mean_cosine": rows[1]["mean_cosine"],
        "absolute_stitched_acc": abs_s["stitched_mean"],
        "relative_stitched_acc": rel_s["stitched_mean"],
        "relative_non_stitched_acc": rel_s["non_stitched_mean"],
        "absolute_axis_corr": corr["absolute"], "relative_axis_corr": corr["relative"],
        "claim_holds": bool(rel_s["stitched_mean"] > 0.8 * rel_s["non_stitched_mean"]
                            and abs_s["stitched_mean"] < 0.5 * abs_s["non_stitched_mean"]
                            and rows[1][f"mrr@{k}"] > rows[0][f"mrr@{k}"]),
    }
    return Results(
        rows=rows,
        tables={"Latent similarity between the two seeds (test set)": sim_table,
                f"The two seeds on one shared 2-D PCA basis (fitted on {names[0]}): per-axis "
                f"correlation of {names[1]}'s coordinates with {names[0]}'s": basis_table,
                "Zero-shot stitching (logistic regression head), mean over ordered pairs":
                    stitch_table,
                "Zero-shot stitching, every ordered pair of seeds (acc %; ± over head/anchor "
                "seeds where they differ)": pair_table},
        figures=[fig.name, heat.name],
        summary=summary,
        notes=[f"scikit-learn digits, {len(x_tr)} train / {len(x_te)} test; MLP 64-128-32 trained "
               f"{cfg['epochs']} epochs; {cfg['anchors']} class-stratified anchors, cosine; "
               f"stitching over {cfg['seeds']} head/anchor seeds."],
    )


def _pair_table(stitch: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Accuracy of every (head fit on, evaluated on) pair of seeds, absolute and relative heads:
    the Markdown table and one row per pair for results.json."""

    mats = {kind: res.matrix("accuracy") for kind, res in stitch.items()}
    names = mats["absolute"][0]
    body, out = [], []
    for i, fit in enumerate(names):
        for j, ev in enumerate(names):
            row: dict[str, Any] = {"table": "stitching_pairs", "fit_space": fit,
                                   "eval_space": ev, "stitched": fit != ev}
            cells = []
            for kind, (_, mean, std) in mats.items():
                sd = None if np.isnan(std[i, j]) else float(std[i, j])
                row[f"{kind}_accuracy_mean"] = float(mean[i, j])
                row[f"{kind}_accuracy_std"] = sd
                cells.append(fmt_mean_std(float(mean[i, j]), sd, 1, 100))
            body.append([fit, ev + (" (same)" if fit == ev else " (zero-shot)"), *cells])
            out.append(row)
    return markdown_table(["head fit on", "evaluated on", *(f"{k} head" for k in mats)],
                          body), out


def _heatmaps(path: Any, stitch: dict[str, Any]) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    fig = Figure(figsize=(8, 3.6))
    for ax, (kind, res) in zip(fig.subplots(1, 2), stitch.items()):
        res.heatmap(None, "accuracy", title=f"{kind} head accuracy", ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

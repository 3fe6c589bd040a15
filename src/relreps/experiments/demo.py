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


def _figure(path: Any, spaces: dict[str, np.ndarray], y: np.ndarray, titles: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig, axes = plt.subplots(1, len(spaces), figsize=(4 * len(spaces), 4))
    for ax, (_, z), title in zip(axes, spaces.items(), titles):
        p = PCA(2, random_state=0).fit_transform(z)
        sc = ax.scatter(p[:, 0], p[:, 1], c=y, cmap="tab10", s=6)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes, fraction=0.02, label="digit")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


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
    from relreps.report import markdown_table
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
        st_rows.append([kind, f"{100 * summ['non_stitched_mean']:.1f} ± "
                              f"{100 * summ['non_stitched_std']:.1f}",
                        f"{100 * summ['stitched_mean']:.1f} ± {100 * summ['stitched_std']:.1f}"])
        rows += [{"table": "stitching", **r} for r in res.rows]
    stitch_table = markdown_table(["head on", "same seed (acc %)", "other seed, zero-shot (acc %)"],
                                  st_rows)

    fig = ctx.figure_path("latent_spaces")
    names = list(spaces)
    _figure(fig, {"a": a_te, "b": b_te, "ra": ra, "rb": rb}, y_te,
            [f"absolute, {names[0]}", f"absolute, {names[1]}", f"relative, {names[0]}",
             f"relative, {names[1]}"])
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
        "claim_holds": bool(rel_s["stitched_mean"] > 0.8 * rel_s["non_stitched_mean"]
                            and abs_s["stitched_mean"] < 0.5 * abs_s["non_stitched_mean"]
                            and rows[1][f"mrr@{k}"] > rows[0][f"mrr@{k}"]),
    }
    return Results(
        rows=rows,
        tables={"Latent similarity between the two seeds (test set)": sim_table,
                "Zero-shot stitching (logistic regression head)": stitch_table},
        figures=[fig.name, heat.name],
        summary=summary,
        notes=[f"scikit-learn digits, {len(x_tr)} train / {len(x_te)} test; MLP 64-128-32 trained "
               f"{cfg['epochs']} epochs; {cfg['anchors']} class-stratified anchors, cosine; "
               f"stitching over {cfg['seeds']} head/anchor seeds."],
    )


def _heatmaps(path: Any, stitch: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for ax, (kind, res) in zip(axes, stitch.items()):
        res.heatmap(path, "accuracy", title=f"{kind} head accuracy", ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

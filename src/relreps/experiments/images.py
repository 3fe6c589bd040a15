"""Image experiments: AE/VAE zero-shot stitching (paper 5.1), training with the relative layer
(section 4) and cross-architecture classifier stitching EfficientNet-Lite0 <-> Lite2 (5.3).

Options (`--opt KEY=VALUE`): `parts=1,2,3`, `datasets=mnist,fashion-mnist,cifar10`, `seeds=N`,
and any key of the scale's configuration (`ae_n_train`, `ae_max_epochs`, `ae_patience`, ...).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from relreps.experiments.base import Results, RunContext

NAME = "images"
DESCRIPTION = ("MNIST/Fashion-MNIST/CIFAR-10: AE/VAE zero-shot stitching, CNN and frozen "
               "EfficientNet classifiers with/without the relative layer, Lite0<->Lite2 stitching")
#: `--opt` keys this experiment reads -> help (defaults per scale).
OPTIONS: dict[str, str] = {
    "parts": "comma list of parts to run: 1 AE/VAE, 2 relative layer, 3 EfficientNet (1,2,3)",
    "seeds": "seeds (smoke 2, full 3)",
    "datasets": "comma list of mnist, fashion-mnist, cifar10 (all three)",
    "ae_n_train": "AE/VAE training images, validation split excluded (smoke 200, full 2000)",
    "ae_n_val": "AE/VAE validation images, held out of the training split (smoke 60, full 500)",
    "ae_n_test": "AE/VAE test images (smoke 100, full 1000)",
    "ae_max_epochs": "AE/VAE maximum epochs; early stopping on validation loss (smoke 4, full 30)",
    "ae_patience": "AE/VAE early-stopping patience in epochs (smoke 2, full 4)",
    "ae_curve_sizes": "training sizes of the ratio-vs-size curve, besides ae_n_train "
                      "(smoke 100, full 1000)",
    "ae_curve_spaces": "spaces of the ratio-vs-size curve (smoke relative,absolute; full relative)",
    "ae_anchors": "AE/VAE anchors (smoke 50, full 500)",
    "ae_latent": "AE/VAE latent width (32)",
    "ae_center": "relative AE/VAE: none (default, the paper's cosine) or anchors (subtract the "
                 "anchor latents' mean before the cosine)",
    "ae_lr": "AE/VAE learning rate (2e-3)",
    "kl_weight": "VAE KL weight (0.05)",
    "ae_batch_size": "AE/VAE batch size (smoke 64, full 128)",
    "ae_models": "comma list of AE, VAE (AE,VAE)",
    "cnn_n_train": "CNN training images, validation split excluded (smoke 300, full 5000)",
    "cnn_n_val": "CNN validation images from the training split (smoke 60, full 500)",
    "cnn_n_test": "CNN test images (smoke 200, full 1000)",
    "cnn_max_epochs": "CNN maximum epochs; early stopping on validation loss (smoke 3, full 20)",
    "cnn_patience": "CNN early-stopping patience in epochs (smoke 2, full 3)",
    "cnn_anchors": "CNN relative-layer anchors (smoke 50, full 300)",
    "cnn_lr": "CNN learning rate (2e-3)",
    "cifar_n_train": "EfficientNet part: CIFAR-10 training images (smoke 200, full 1000)",
    "cifar_n_test": "EfficientNet part: CIFAR-10 test images (smoke 100, full 1000)",
    "cifar_resolution": "EfficientNet input resolution, 0 = native (smoke 64, full 0)",
    "cifar_anchors": "EfficientNet part anchors (smoke 50, full 500)",
    "cifar_n_val": "EfficientNet part: validation images held out of the training images to "
                   "choose the head's epochs (smoke 50, full 200)",
    "head_epochs_grid": "candidate epochs of the heads on frozen features, chosen on the "
                        "validation split (smoke 5,10, full 10,20,40,80)",
    "batch_size": "batch size of the CNN and heads (64)",
}

DATA_SEED = 0  # subsamples of the data sets do not change with the run seed (feature cache)

_SMOKE: dict[str, Any] = {
    "seeds": 2, "datasets": "mnist,fashion-mnist,cifar10",
    "ae_n_train": 200, "ae_n_val": 60, "ae_n_test": 100, "ae_max_epochs": 4,
    "ae_patience": 2, "ae_curve_sizes": "100", "ae_curve_spaces": "relative,absolute",
    "ae_anchors": 50, "ae_latent": 32, "ae_lr": 2e-3, "kl_weight": 0.05, "ae_batch_size": 64,
    "ae_models": "AE,VAE", "ae_center": "none",
    "cnn_n_train": 300, "cnn_n_val": 60, "cnn_n_test": 200, "cnn_max_epochs": 3,
    "cnn_patience": 2, "cnn_anchors": 50, "cnn_lr": 2e-3,
    "cifar_n_train": 200, "cifar_n_val": 50, "cifar_n_test": 100, "cifar_resolution": 64,
    "cifar_anchors": 50, "head_epochs_grid": "5,10", "batch_size": 64,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": _SMOKE,
    # Sized for 2 shared CPU cores (see docs/images.md); cifar_resolution 0 = native (224/260).
    # Early stopping decides the epochs (max_epochs is a ceiling); batch 128 for the AEs: the
    # relative models re-encode their 500 anchors in every step, so small batches cost ~5x more.
    "full": dict(_SMOKE, seeds=3, ae_n_train=2000, ae_n_val=500, ae_n_test=1000,
                 ae_max_epochs=30, ae_patience=4, ae_curve_sizes="1000",
                 ae_curve_spaces="relative",
                 ae_anchors=500, ae_batch_size=128, cnn_n_train=5000, cnn_n_val=500,
                 cnn_n_test=1000, cnn_max_epochs=20, cnn_patience=3, cnn_anchors=300,
                 cifar_n_train=1000, cifar_n_val=200, cifar_n_test=1000, cifar_resolution=0,
                 cifar_anchors=500, head_epochs_grid="10,20,40,80"),
}


def _config(ctx: RunContext) -> dict[str, Any]:
    cfg = dict(CONFIGS[ctx.scale])
    for k, v in ctx.options.items():
        if k == "parts":
            continue
        if k not in cfg:
            raise ValueError(f"unknown option {k!r}; known: parts, {', '.join(cfg)}")
        cfg[k] = type(cfg[k])(v)
    return cfg


def _load(name: str, split: str, n: int):
    from relreps.datasets.images import load_image_dataset

    return load_image_dataset(name, split=split, n=n, seed=DATA_SEED)


def _anchor_idx(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    from relreps.anchors import sample_anchors

    return np.asarray(sample_anchors(np.zeros((len(y), 1)), n, method="stratified", y=y,
                                     random_state=seed))


def _pairs(seeds: list[int]) -> list[tuple[int, int]]:
    return [(i, j) for i in seeds for j in seeds]


# ------------------------------------------------------------------ part 1: AE/VAE stitching

def _split_train_val(tr: Any, n_val: int) -> tuple[Any, Any]:
    """A class-stratified validation split of the *training* rows (fixed: data seed) and the
    rest; the test split is loaded separately and never enters training or any choice."""
    from relreps.datasets.images import ImageData, stratified_subsample

    val = stratified_subsample(tr.y, n_val, seed=DATA_SEED)
    fit = np.setdiff1d(np.arange(len(tr)), val)
    part = lambda idx: ImageData(tr.x[idx], tr.y[idx], tr.classes, tr.name)  # noqa: E731
    return part(fit), part(val)


def _load_with_val(ds: str, cfg: dict[str, Any], prefix: str, res: Results, seed: int
                   ) -> tuple[Any, Any, Any, np.ndarray] | None:
    """(fit, validation, test, anchor indices into fit) for the `prefix` ("ae"/"cnn") sizes:
    `{prefix}_n_train` fit rows and `{prefix}_n_val` validation rows, both from the training
    split; None with a note when the data set is not installed."""
    from relreps.errors import DataNotFoundError

    try:
        tr = _load(ds, "train", cfg[f"{prefix}_n_train"] + cfg[f"{prefix}_n_val"])
        te = _load(ds, "test", cfg[f"{prefix}_n_test"])
    except DataNotFoundError as e:
        res.notes.append(f"{prefix} part skipped {ds}: {e}")
        return None
    fit, val = _split_train_val(tr, cfg[f"{prefix}_n_val"])
    return fit, val, te, _anchor_idx(fit.y, cfg[f"{prefix}_anchors"], seed)


def _ratio(mse: np.ndarray) -> tuple[float, float, float]:
    """(non-stitched mean, stitched mean, stitched / non-stitched) of a (k, k) MSE matrix."""
    k = len(mse)
    ns = float(np.mean(np.diag(mse)))
    st = float(mse[~np.eye(k, dtype=bool)].mean()) if k > 1 else float("nan")
    return ns, st, st / ns


def _train_ae_group(cfg: dict[str, Any], x_fit: np.ndarray, x_val: np.ndarray,
                    anchors: np.ndarray, model: str, space: str, seeds: list[int], desc: str,
                    curve: list[dict[str, Any]] | None) -> tuple[list[Any], list[Any]]:
    """One model per seed trained in lockstep with early stopping on `x_val`; with `curve`,
    one record per epoch (mean train/validation loss, validation stitching MSEs and ratio)."""
    import torch

    from relreps.models.vision import (
        ImageAutoencoder,
        TrainConfig,
        stitching_mse_matrix,
        train_autoencoders,
    )

    c, s = x_fit.shape[1], x_fit.shape[2]
    from relreps.validation import check_choice

    center = check_choice(str(cfg["ae_center"]), "ae_center", ("none", "anchors"))
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        m = ImageAutoencoder(c, s, cfg["ae_latent"], variational=model == "VAE",
                             relative=space == "relative", n_anchors=cfg["ae_anchors"],
                             center=None if center == "none" else "anchors")
        m.set_anchors(anchors)
        models.append(m)
    tc = TrainConfig(epochs=cfg["ae_max_epochs"], batch_size=cfg["ae_batch_size"],
                     lr=cfg["ae_lr"], kl_weight=cfg["kl_weight"], seed=seeds[0],
                     patience=cfg["ae_patience"])

    def on_epoch(epoch: int) -> None:
        mse = stitching_mse_matrix(models, x_val)
        ns, st, r = _ratio(mse)
        curve.append({"epoch": epoch, "val_mse_non_stitched": ns, "val_mse_stitched": st,
                      "val_ratio": r})

    hists = train_autoencoders(models, x_fit, tc, seeds=seeds, x_val=x_val, desc=desc,
                               on_epoch=None if curve is None else on_epoch)
    if curve is not None:
        for rec in curve:
            e = rec["epoch"] - 1
            rec["train_loss"] = float(np.mean([h.train_loss[e] for h in hists]))
            rec["val_loss"] = float(np.mean([h.val_loss[e] for h in hists]))
    return models, hists


def _part1(ctx: RunContext, cfg: dict[str, Any], res: Results, datasets: list[str]) -> None:
    from relreps.models.vision import stitching_mse_matrix

    seeds = ctx.seeds(cfg["seeds"])
    rows: list[dict[str, Any]] = []
    figure_models: dict[str, dict] = {}
    sizes = sorted({int(v) for v in str(cfg["ae_curve_sizes"]).split(",") if v.strip()})
    curve_spaces = [v.strip() for v in str(cfg["ae_curve_spaces"]).split(",") if v.strip()]
    for ds in datasets:
        data = _load_with_val(ds, cfg, "ae", res, ctx.seed)
        if data is None:
            continue
        fit, val, te, aidx = data
        anchors = fit.x[aidx]
        for model in [m.strip() for m in cfg["ae_models"].split(",") if m.strip()]:
            for space in ("absolute", "relative"):
                t0 = time.perf_counter()
                curve: list[dict[str, Any]] = []
                models, hists = _train_ae_group(cfg, fit.x, val.x, anchors, model, space, seeds,
                                                f"{ds} {model} {space}", curve)
                trained = dict(zip(seeds, models))
                ctx.log(f"[images] {ds} {model} {space}: {len(seeds)} models, best epochs "
                        f"{[h.best_epoch for h in hists]} of {hists[0].epochs_run}, "
                        f"{time.perf_counter() - t0:.0f} s")
                base = {"dataset": ds, "model": model, "space": space,
                        "variant": f"{model} {space}"}
                for rec in curve:
                    rows.append({"part": "ae_epoch_curve", **base, **rec})
                for seed, h in zip(seeds, hists):
                    rows.append({"part": "ae_training", **base, "seed": seed,
                                 "best_epoch": h.best_epoch, "epochs_run": h.epochs_run,
                                 "train_loss": h.train_loss, "val_loss": h.val_loss})
                best = _ratio(stitching_mse_matrix(models, val.x))
                if space in curve_spaces:
                    rows.append({"part": "ae_size_curve", **base, "n_train": len(fit),
                                 "val_mse_non_stitched": best[0], "val_mse_stitched": best[1],
                                 "val_ratio": best[2],
                                 "best_epochs": [h.best_epoch for h in hists]})
                    for n in (v for v in sizes if v < len(fit)):
                        from relreps.datasets.images import stratified_subsample

                        sub = stratified_subsample(fit.y, n, seed=DATA_SEED)
                        sm, sh = _train_ae_group(cfg, fit.x[sub], val.x, anchors, model, space,
                                                 seeds, f"{ds} {model} {space} n={n}", None)
                        r = _ratio(stitching_mse_matrix(sm, val.x))
                        rows.append({"part": "ae_size_curve", **base, "n_train": n,
                                     "val_mse_non_stitched": r[0], "val_mse_stitched": r[1],
                                     "val_ratio": r[2],
                                     "best_epochs": [h.best_epoch for h in sh]})
                mse = stitching_mse_matrix(models, te.x)
                for a, i in enumerate(seeds):
                    for b_, j in enumerate(seeds):
                        rows.append({"part": "ae_stitching", **base,
                                     "encoder_seed": i, "decoder_seed": j, "stitched": i != j,
                                     "stitch": "stitched" if i != j else "non-stitched",
                                     "mse": float(mse[a, b_])})
                if model == "AE":
                    figure_models.setdefault(ds, {"test": te})[space] = trained
    if not rows:
        return
    res.rows.extend(rows)
    from relreps.report import markdown_table, pivot_table

    st_rows = [r for r in rows if r["part"] == "ae_stitching"]
    for ds in dict.fromkeys(r["dataset"] for r in st_rows):
        sub = [r for r in st_rows if r["dataset"] == ds]
        res.tables[f"1. Zero-shot AE/VAE stitching: reconstruction MSE, {ds}"] = pivot_table(
            sub, index="variant", columns="stitch", value="mse", digits=4)
    # goals: relative stitched within 1.5x of non-stitched; absolute stitched >= 3x
    goal_rows = []
    for ds in dict.fromkeys(r["dataset"] for r in st_rows):
        for model in dict.fromkeys(r["model"] for r in st_rows if r["dataset"] == ds):
            ratios = {}
            for space in ("absolute", "relative"):
                sub = [r for r in st_rows if (r["dataset"], r["model"], r["space"]) == (
                    ds, model, space)]
                st = np.mean([r["mse"] for r in sub if r["stitched"]])
                ns = np.mean([r["mse"] for r in sub if not r["stitched"]])
                ratios[space] = float(st / ns)
            ok = ratios["relative"] <= 1.5 and ratios["absolute"] >= 3.0
            epochs = {space: [r["best_epoch"] for r in rows if r["part"] == "ae_training"
                              and (r["dataset"], r["model"], r["space"]) == (ds, model, space)]
                      for space in ("absolute", "relative")}
            goal_rows.append([ds, model, f"{ratios['absolute']:.2f}", f"{ratios['relative']:.2f}",
                              "yes" if ok else "no",
                              ", ".join(str(e) for e in epochs["absolute"]),
                              ", ".join(str(e) for e in epochs["relative"])])
            res.summary[f"ae_ratio_{ds}_{model}_absolute"] = round(ratios["absolute"], 3)
            res.summary[f"ae_ratio_{ds}_{model}_relative"] = round(ratios["relative"], 3)
            res.summary[f"ae_goal_{ds}_{model}"] = ok
    res.tables["1. Stitched / non-stitched MSE ratio, test set (goal: relative <= 1.5, "
               "absolute >= 3)"] = markdown_table(
        ["dataset", "model", "absolute ratio", "relative ratio", "goal met",
         "best epochs abs. (per seed)", "best epochs rel. (per seed)"], goal_rows)
    size_rows = [r for r in rows if r["part"] == "ae_size_curve"]
    if size_rows:
        res.tables["1b. Validation ratio against training size (early-stopped models)"] = \
            markdown_table(["dataset", "variant", "training images", "non-stitched MSE",
                            "stitched MSE", "ratio", "best epochs"],
                           [[r["dataset"], r["variant"], r["n_train"],
                             f"{r['val_mse_non_stitched']:.4f}", f"{r['val_mse_stitched']:.4f}",
                             f"{r['val_ratio']:.2f}", ", ".join(map(str, r["best_epochs"]))]
                            for r in sorted(size_rows, key=lambda r: (
                                r["dataset"], r["variant"], r["n_train"]))])
    _curve_figure(ctx, res, rows)
    _reconstruction_figure(ctx, res, figure_models, seeds)
    first = next(iter(figure_models), None)
    if first is not None:
        _latent_figure(ctx, res, figure_models[first], seeds, first)


def _curve_figure(ctx: RunContext, res: Results, rows: list[dict[str, Any]]) -> None:
    """Validation stitched / non-stitched ratio against epochs (relative and absolute models)
    and against training size, one line per data set and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in rows if r["part"] == "ae_epoch_curve"]
    sizes = [r for r in rows if r["part"] == "ae_size_curve"]
    if not curves:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    keys = list(dict.fromkeys((r["dataset"], r["model"]) for r in curves))
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(keys)}
    for ax, space in zip(axes[:2], ("relative", "absolute")):
        for k in keys:
            sub = [r for r in curves if (r["dataset"], r["model"], r["space"]) == (*k, space)]
            if sub:
                ax.plot([r["epoch"] for r in sub], [r["val_ratio"] for r in sub],
                        color=colors[k], label=f"{k[0]} {k[1]}")
        ax.axhline(1.5 if space == "relative" else 3.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("stitched / non-stitched MSE (validation)")
        ax.set_title(f"{space} models", fontsize=10)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for k in keys:
        for space, ls in (("relative", "-"), ("absolute", "--")):
            sub = sorted((r for r in sizes
                          if (r["dataset"], r["model"], r["space"]) == (*k, space)),
                         key=lambda r: r["n_train"])
            if sub:
                ax.plot([r["n_train"] for r in sub], [r["val_ratio"] for r in sub], ls,
                        marker="o", color=colors[k], label=f"{k[0]} {k[1]} {space[:3]}.")
    ax.axhline(1.5, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training images (early-stopped models)")
    ax.set_ylabel("stitched / non-stitched MSE (validation)")
    ax.set_title("ratio against training size", fontsize=10)
    if sizes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = ctx.figure_path("ae_ratio_curves")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    res.figures.append(path.name)


def _reconstruction_figure(ctx: RunContext, res: Results, figure_models: dict,
                           seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relreps.models.vision import stitch_reconstruct

    if len(seeds) < 2 or not figure_models:
        return
    a, b = seeds[0], seeds[1]
    n_cols = 8
    row_labels = ["original", f"abs. same seed ({a}->{a})", f"abs. stitched ({b}->{a})",
                  f"rel. same seed ({a}->{a})", f"rel. stitched ({b}->{a})"]
    n_rows = len(row_labels) * len(figure_models)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 1.0, n_rows * 1.05))
    axes = np.atleast_2d(axes)
    r0 = 0
    for ds, info in figure_models.items():
        te = info["test"]
        idx = [int(np.flatnonzero(te.y == c)[0]) for c in range(te.n_classes)
               if np.any(te.y == c)][:n_cols]
        x = te.x[idx]
        imgs = [x,
                stitch_reconstruct(info["absolute"][a], info["absolute"][a], x),
                stitch_reconstruct(info["absolute"][b], info["absolute"][a], x),
                stitch_reconstruct(info["relative"][a], info["relative"][a], x),
                stitch_reconstruct(info["relative"][b], info["relative"][a], x)]
        for k, batch in enumerate(imgs):
            for col in range(n_cols):
                ax = axes[r0 + k, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(batch):
                    ax.axis("off")
                    continue
                im = np.clip(batch[col].transpose(1, 2, 0), 0, 1)
                ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=1)
                if col == 0:
                    ax.set_ylabel(f"{ds}\n{row_labels[k]}" if k == 0 else row_labels[k],
                                  fontsize=6, rotation=0, ha="right", va="center")
        r0 += len(imgs)
    fig.suptitle("AE reconstructions: encoder seed -> decoder seed", fontsize=9)
    fig.tight_layout()
    path = ctx.figure_path("ae_reconstructions")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    res.figures.append(path.name)


def _pca_basis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, top-2 principal directions) of x."""
    mu = x.mean(0)
    _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
    return mu, vt[:2]


def _latent_figure(ctx: RunContext, res: Results, info: dict, seeds: list[int],
                   ds: str) -> None:
    """The paper's first figure: two seeds' latent spaces, absolute vs relative, PCA by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relreps.metrics import mean_cosine
    from relreps.models.vision import latents, relative_latents

    if len(seeds) < 2:
        return
    te = info["test"]
    a, b = seeds[0], seeds[1]
    spaces = {"absolute": [latents(info["absolute"][s], te.x) for s in (a, b)],
              "relative": [relative_latents(info["relative"][s], te.x) for s in (a, b)]}
    fig, axes = plt.subplots(2, 2, figsize=(8, 7.5))
    for r, (space, (za, zb)) in enumerate(spaces.items()):
        # One projection for both seeds (fit on the first): coordinates that mean the same thing
        # in both panels. Fitting a PCA per seed would hide the rotation between absolute spaces.
        mu, comps = _pca_basis(za)
        for c, (z, s) in enumerate(((za, a), (zb, b))):
            p = (z - mu) @ comps.T
            ax = axes[r, c]
            sc = ax.scatter(p[:, 0], p[:, 1], c=te.y, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
            ax.set_title(f"{space} latent, seed {s}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        res.summary[f"latent_cross_seed_mean_cosine_{space}"] = round(float(mean_cosine(za, zb)),
                                                                      4)
        centred = mean_cosine(za - za.mean(0), zb - zb.mean(0))
        res.summary[f"latent_cross_seed_centred_cosine_{space}"] = round(float(centred), 4)
    fig.colorbar(sc, ax=axes, ticks=range(10), fraction=0.03, label="class")
    fig.suptitle(f"{ds} AE latents of two seeds, test set, both projected on the first seed's "
                 "2 principal directions", fontsize=10)
    path = ctx.figure_path("latent_spaces")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    res.figures.append(path.name)
    sm = res.summary
    res.notes.append(
        f"Latent figure ({ds}): mean cosine between the same test images' latents of seeds {a} "
        f"and {b}: absolute {sm['latent_cross_seed_mean_cosine_absolute']:.3f}, relative "
        f"{sm['latent_cross_seed_mean_cosine_relative']:.3f}; after centring each space on its "
        f"mean (the relative cosines are all positive, which inflates the plain figure): "
        f"absolute {sm['latent_cross_seed_centred_cosine_absolute']:.3f}, relative "
        f"{sm['latent_cross_seed_centred_cosine_relative']:.3f}.")


# ------------------------------------------------------------------ part 2: classifiers

def _cnn_part(ctx: RunContext, cfg: dict[str, Any], res: Results, datasets: list[str]) -> None:
    import torch

    from relreps.models.vision import CNNClassifier, TrainConfig, stitch_logits, train_classifiers
    from relreps.stitching import score

    seeds = ctx.seeds(cfg["seeds"])
    for ds in [d for d in datasets if d != "cifar10"]:
        data = _load_with_val(ds, cfg, "cnn", res, ctx.seed)
        if data is None:
            continue
        tr, val, te, aidx = data
        for space in ("absolute", "relative"):
            t0 = time.perf_counter()
            models = []
            for seed in seeds:
                torch.manual_seed(seed)
                m = CNNClassifier(tr.x.shape[1], tr.x.shape[2], tr.n_classes,
                                  relative=space == "relative", n_anchors=cfg["cnn_anchors"])
                m.set_anchors(tr.x[aidx])
                models.append(m)
            tc = TrainConfig(epochs=cfg["cnn_max_epochs"], batch_size=cfg["batch_size"],
                             lr=cfg["cnn_lr"], seed=seeds[0], patience=cfg["cnn_patience"])
            hists = train_classifiers(models, tr.x, tr.y, tc, seeds=seeds, x_val=val.x,
                                      y_val=val.y, desc=f"{ds} CNN {space}")
            trained = dict(zip(seeds, models))
            for seed, h in zip(seeds, hists):
                res.rows.append({"part": "cnn_training", "dataset": ds, "space": space,
                                 "seed": seed, "best_epoch": h.best_epoch,
                                 "epochs_run": h.epochs_run, "train_loss": h.train_loss,
                                 "val_loss": h.val_loss})
            ctx.log(f"[images] {ds} CNN {space}: {len(seeds)} models, best epochs "
                    f"{[h.best_epoch for h in hists]}, {time.perf_counter() - t0:.0f} s")
            for i, j in _pairs(seeds):
                pred = stitch_logits(trained[i], trained[j], te.x).argmax(1)
                row = {"dataset": ds, "backbone": "CNN", "space": space, "encoder_seed": i,
                       "head_seed": j, "seed": j, "stitched": i != j,
                       "accuracy": score(te.y, pred, "accuracy"),
                       "f1_weighted": score(te.y, pred, "f1_weighted")}
                if i == j:
                    res.rows.append({"part": "classification", **row})
                res.rows.append({"part": "cnn_stitching", **row,
                                 "stitch": "stitched" if i != j else "non-stitched"})


def _cifar_features(cfg: dict[str, Any]) -> dict[str, Any]:
    from relreps.encoders.vision import EfficientNetLiteEncoder

    tr = _load("cifar10", "train", cfg["cifar_n_train"])
    te = _load("cifar10", "test", cfg["cifar_n_test"])
    res = cfg["cifar_resolution"] or None
    out: dict[str, Any] = {"y_train": tr.y, "y_test": te.y}
    for variant in ("lite0", "lite2"):
        enc = EfficientNetLiteEncoder(variant, resolution=res)
        out[variant] = (enc.encode(tr.x), enc.encode(te.x))
        out[f"{variant}_name"] = enc.name
    return out


def _head_factory(epochs: int):
    from relreps.nn import RelativeClassifierHead, TorchClassifier

    def make(seed: int) -> Any:
        return TorchClassifier(lambda d, c: RelativeClassifierHead(d, c), epochs=epochs,
                               random_state=seed)
    return make


def _choose_head_epochs(ctx: RunContext, cfg: dict[str, Any], feats: dict[str, Any],
                        res: Results) -> dict[str, int]:
    """Per space, the head's epochs from `head_epochs_grid` with the best mean validation
    accuracy of the two encoders' own heads (ties: fewer epochs). The validation rows are a
    stratified split of the *training* images; the test images are not used."""
    from relreps.datasets.images import stratified_subsample
    from relreps.stitching import stitching_matrix

    y = feats["y_train"]
    val = stratified_subsample(y, cfg["cifar_n_val"], seed=DATA_SEED)
    fit = np.setdiff1d(np.arange(len(y)), val)
    aidx = _anchor_idx(y[fit], min(cfg["cifar_anchors"], len(fit)), ctx.seed)
    grid = sorted({int(v) for v in str(cfg["head_epochs_grid"]).split(",") if v.strip()})
    spaces = {v: (feats[v.lower()][0][fit], feats[v.lower()][0][val]) for v in ("Lite0", "Lite2")}
    chosen = {}
    for space in ("relative", "absolute"):
        scores = {}
        for e in grid:
            sr = stitching_matrix(spaces, y[fit], y[val], anchors=aidx, space=space,
                                  center="anchors", head=_head_factory(e),
                                  seeds=[ctx.seed], show_progress=False)
            scores[e] = sr.summary("accuracy")["non_stitched_mean"]
            res.rows.append({"part": "head_epochs_validation", "space": space, "epochs": e,
                             "val_accuracy": scores[e]})
        chosen[space] = max(grid, key=lambda e: (scores[e], -e))
        res.summary[f"head_epochs_{space}"] = chosen[space]
    return chosen


def _cifar_parts(ctx: RunContext, cfg: dict[str, Any], res: Results, parts: set[int]) -> None:
    from relreps.errors import DataNotFoundError, MissingDependencyError
    from relreps.stitching import stitching_matrix

    try:
        feats = _cifar_features(cfg)
    except (DataNotFoundError, MissingDependencyError) as e:
        res.notes.append(f"CIFAR-10 EfficientNet parts skipped: {e}")
        return
    seeds = ctx.seeds(cfg["seeds"])
    aidx = _anchor_idx(feats["y_train"], cfg["cifar_anchors"], ctx.seed)
    head_epochs = _choose_head_epochs(ctx, cfg, feats, res)
    results = {}
    for space in ("relative", "absolute"):
        results[space] = stitching_matrix(
            {"Lite0": feats["lite0"], "Lite2": feats["lite2"]}, feats["y_train"],
            feats["y_test"], anchors=aidx, space=space, center="anchors",
            head=_head_factory(head_epochs[space]), seeds=seeds)
    if 2 in parts:
        for space, sr in results.items():
            for r in sr.rows:
                if r["fit_space"] == "Lite0" and r["eval_space"] == "Lite0":
                    res.rows.append({"part": "classification", "dataset": "cifar10",
                                     "backbone": "EfficientNet-Lite0 (frozen)", "space": space,
                                     "seed": r["seed"], "accuracy": r["accuracy"],
                                     "f1_weighted": r["f1_weighted"]})
    if 3 in parts:
        for space, sr in results.items():
            for r in sr.rows:
                res.rows.append({"part": "cross_architecture", **r,
                                 "stitch": "stitched" if r["stitched"] else "non-stitched"})
            for metric in ("accuracy", "f1_weighted"):
                res.tables[f"3. CIFAR-10 Lite0 <-> Lite2 stitching, {space} heads, {metric} (%)"] \
                    = sr.to_markdown(metric)
            summ = sr.summary("accuracy")
            for k, v in summ.items():
                res.summary[f"xarch_{space}_{k}"] = round(float(v), 4)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = ctx.figure_path("cross_architecture_stitching")
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
        for ax, space in zip(axes, ("relative", "absolute")):
            results[space].heatmap(path, "accuracy", title=f"{space} head accuracy", ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        res.figures.append(path.name)
        rel, ab = results["relative"].summary("accuracy"), results["absolute"].summary("accuracy")
        res.summary["xarch_goal_relative_ge_85pct"] = bool(rel["ratio"] >= 0.85)
        res.summary["xarch_absolute_stitched_vs_chance"] = round(ab["stitched_mean"] / 0.1, 2)
        res.notes.append(
            f"Cross-architecture features: {feats['lite0_name']} and {feats['lite2_name']}, "
            f"{len(feats['y_train'])} train / {len(feats['y_test'])} test CIFAR-10 images, "
            f"{cfg['cifar_anchors']} class-stratified anchors, cosine on anchor-centred "
            "features, the paper's head (LayerNorm, Linear, Tanh, per-anchor batch "
            "normalisation, Linear), epochs chosen on a validation split of the training "
            f"images (relative {head_epochs['relative']}, absolute {head_epochs['absolute']}); "
            "the absolute head is the same module on the raw 1280-d features (both encoders "
            "are 1280-d).")


# ------------------------------------------------------------------ entry point

def _classification_tables(res: Results) -> None:
    from relreps.report import markdown_table, pivot_table

    cls = [r for r in res.rows if r["part"] == "classification"]
    if cls:
        for r in cls:
            r["setting"] = f"{r['dataset']} ({r['backbone']})"
        for metric in ("accuracy", "f1_weighted"):
            res.tables[f"2. Classification with/without the relative layer, {metric} (%)"] = \
                pivot_table(cls, index="setting", columns="space", value=metric, digits=2,
                            scale=100)
        gaps = []
        for setting in dict.fromkeys(r["setting"] for r in cls):
            acc = {s: np.mean([r["accuracy"] for r in cls
                               if r["setting"] == setting and r["space"] == s])
                   for s in ("absolute", "relative")}
            gap = 100 * (acc["relative"] - acc["absolute"])
            gaps.append([setting, f"{100 * acc['absolute']:.2f}", f"{100 * acc['relative']:.2f}",
                         f"{gap:+.2f}", "yes" if abs(gap) <= 2 else "no"])
            res.summary[f"cls_gap_points_{setting}"] = round(float(gap), 2)
        res.tables["2. Relative - absolute accuracy (goal: within 2 points)"] = markdown_table(
            ["setting", "absolute", "relative", "gap (points)", "goal met"], gaps)
    st = [r for r in res.rows if r["part"] == "cnn_stitching"]
    if st:
        for r in st:
            r["variant"] = f"{r['dataset']} CNN {r['space']}"
        res.tables["3b. Seed-to-seed stitching of the CNN classifiers, accuracy (%)"] = \
            pivot_table(st, index="variant", columns="stitch", value="accuracy", digits=2,
                        scale=100)
        for ds in dict.fromkeys(r["dataset"] for r in st):
            for space in ("absolute", "relative"):
                sub = [r for r in st if r["dataset"] == ds and r["space"] == space]
                s_ = np.mean([r["accuracy"] for r in sub if r["stitched"]])
                n_ = np.mean([r["accuracy"] for r in sub if not r["stitched"]])
                res.summary[f"cnn_stitch_ratio_{ds}_{space}"] = round(float(s_ / n_), 4)


def run(ctx: RunContext) -> Results:
    cfg = _config(ctx)
    parts = {int(p) for p in str(ctx.options.get("parts", "1,2,3")).split(",") if p.strip()}
    datasets = [d.strip() for d in cfg["datasets"].split(",") if d.strip()]
    res = Results()
    timings = {}
    if 1 in parts:
        t0 = time.perf_counter()
        _part1(ctx, cfg, res, datasets)
        timings["part1_ae_stitching_s"] = round(time.perf_counter() - t0, 1)
    if parts & {2, 3}:
        t0 = time.perf_counter()
        _cnn_part(ctx, cfg, res, datasets)
        timings["part2_cnn_s"] = round(time.perf_counter() - t0, 1)
    if "cifar10" in datasets and parts & {2, 3}:
        t0 = time.perf_counter()
        _cifar_parts(ctx, cfg, res, parts)
        timings["cifar_efficientnet_s"] = round(time.perf_counter() - t0, 1)
    _classification_tables(res)
    res.summary.update(timings)
    res.summary["config"] = cfg
    res.notes.append(
        "Not available offline, so not reproduced: CIFAR-100 and the paper's ViT/RexNet weights "
        "(cross-architecture stitching uses EfficientNet-Lite0/Lite2 ImageNet weights only).")
    res.notes.append(
        f"Scale {ctx.scale}: AE {cfg['ae_n_train']} train (+ {cfg['ae_n_val']} validation, "
        f"from the training split) / {cfg['ae_n_test']} test images per data set, at most "
        f"{cfg['ae_max_epochs']} epochs with early stopping on validation loss (patience "
        f"{cfg['ae_patience']}), {cfg['ae_anchors']} anchors; CNN {cfg['cnn_n_train']} (+ "
        f"{cfg['cnn_n_val']}) / {cfg['cnn_n_test']}, at most {cfg['cnn_max_epochs']} epochs "
        f"(patience {cfg['cnn_patience']}), {cfg['cnn_anchors']} anchors; {cfg['seeds']} seeds. "
        "The paper trains on the full data sets for many more epochs.")
    return res

"""Graphs (paper sections 3 and 4): relative GNNs for node classification, latent similarity as a
proxy for performance, the number of anchors, and zero-shot stitching of GNN encoders and heads.

Parts (all on the same fixed anchor nodes per data set, drawn from the training nodes):
1. absolute vs relative GCN node classification, several seeds (test accuracy at the best
   validation epoch);
2. a sweep of models over seeds, epochs, depth, dropout, activation, optimiser, learning rate and
   convolution type; every epoch, mean cosine between each node's relative vector and the
   reference model's (anchors fixed by index) against validation accuracy; the same with the
   absolute latents (and linear CKA, which is invariant to rotations of the latent space);
3. a frozen trained encoder with relative logistic-regression heads on 1..300 anchors, uniform /
   k-means / farthest-point anchors, with the anchors' rank and effective dimensionality;
4. stitching: the encoder of seed i with the head of seed j, absolute vs relative.

Scales: smoke = a synthetic stochastic-block-model graph (seconds); full = Cora and CiteSeer
(Planetoid "full" split: 1,208 / 1,827 training nodes; PubMed is not available offline).
Options (`--opt`): datasets=Cora,CiteSeer  seeds=10  epochs=200  anchors=300  sweep_models=200
sweep_dataset=Cora  sweep_epochs=25,50,100  anchor_counts=1,10,100
anchor_seeds=3  threads=N (torch threads; smoke default 1)  workers=N (processes that train the
part-1 models and the sweep models side by side, one torch thread each; smoke 0 = in this
process, full = the usable CPUs up to 4; a model's result does not depend on where it ran).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from relreps.experiments.base import Results, RunContext

NAME = "graphs"
DESCRIPTION = ("Relative GNNs on Cora/CiteSeer: absolute vs relative accuracy, latent similarity "
               "vs performance over a model sweep, anchor counts, GNN stitching")
#: `--opt` keys this experiment reads -> help (defaults per scale).
OPTIONS: dict[str, str] = {
    "datasets": "comma list of graphs (smoke synthetic, full Cora,CiteSeer)",
    "seeds": "training seeds per model (smoke 3, full 10)",
    "epochs": "training epochs (smoke 60, full 200)",
    "anchors": "anchor nodes per data set (smoke 40, full 300)",
    "sweep_models": "models in the sweep (smoke 10, full 200)",
    "sweep_epochs": "comma list of epochs recorded in the sweep (smoke 5,10,20, full 25,50,100)",
    "sweep_dataset": "data set of the sweep (smoke synthetic, full Cora)",
    "ref_epochs": "epochs of the sweep's reference model (smoke 80, full 200)",
    "anchor_counts": "comma list of anchor counts (smoke 1,2,5,10,20,40, full 1..300)",
    "anchor_seeds": "anchor draws per count (smoke 1, full 3)",
    "stitch_seeds": "seeds in the stitching part (smoke 3, full 10)",
    "bootstrap": "bootstrap resamples of the correlations (smoke 300, full 2000)",
    "patience": "early-stopping patience in epochs (smoke 30, full 40)",
    "threads": "torch threads (smoke 1, full torch's default)",
    "workers": "processes training part-1 and sweep models in parallel, 1 torch thread each "
               "(smoke 0: none, in this process; full: usable CPUs up to 4)",
}

_PLANS: dict[str, dict[str, Any]] = {
    "smoke": {"datasets": ["synthetic"], "seeds": 3, "epochs": 60, "anchors": 40,
              "sweep_models": 10, "sweep_epochs": (5, 10, 20), "sweep_dataset": "synthetic",
              "ref_epochs": 80, "anchor_counts": [1, 2, 5, 10, 20, 40], "anchor_seeds": 1,
              "stitch_seeds": 3, "bootstrap": 300, "patience": 30, "workers": 0},
    "full": {"datasets": ["Cora", "CiteSeer"], "seeds": 10, "epochs": 200, "anchors": 300,
             "sweep_models": 200, "sweep_epochs": (25, 50, 100), "sweep_dataset": "Cora",
             "ref_epochs": 200,
             "anchor_counts": [1, 2, 3, 5, 8, 13, 22, 36, 60, 100, 170, 300], "anchor_seeds": 3,
             "stitch_seeds": 10, "bootstrap": 2000, "patience": 40, "workers": -1},
}

# The sweep's search space (hidden width fixed so that absolute latents can be compared by cosine).
SWEEP_SPACE: dict[str, list[Any]] = {
    "conv": ["gcn", "gcn2", "sage", "graph"],
    "depth": [1, 2, 3, 4],
    "dropout": [0.0, 0.2, 0.5, 0.7],
    "activation": ["relu", "tanh", "elu", "leaky_relu", "gelu", "sigmoid"],
    "optimizer": ["adam", "adamw", "sgd", "rmsprop"],
    "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
}


def _plan(ctx: RunContext) -> dict[str, Any]:
    plan = dict(_PLANS[ctx.scale])
    for key, val in ctx.options.items():
        if key == "datasets":
            plan[key] = [s for s in str(val).split(",") if s]
        elif key == "sweep_dataset":
            plan[key] = str(val)
        elif key in ("sweep_epochs", "anchor_counts"):
            plan[key] = [int(v) for v in str(val).split(",") if v]
        elif key in plan and isinstance(plan[key], int):
            plan[key] = int(val)
    if plan["workers"] < 0:  # full-scale default: one process per usable CPU, at most 4
        plan["workers"] = min(4, _usable_cpus())
    return plan


def _usable_cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _load(name: str, seed: int) -> Any:
    """The data set with the graph as a sparse adjacency matrix (`sparse_adjacency`) and, for
    the bag-of-words citation graphs, sparse node features (`sparse_features`)."""
    from relreps.datasets.graphs import load_graph
    from relreps.models.graph import sparse_adjacency, sparse_features

    data = sparse_adjacency(load_graph(name, split="full", seed=seed))
    return sparse_features(data) if name.lower() in ("cora", "citeseer") else data


def _anchor_nodes(data: Any, n: int, seed: int) -> np.ndarray:
    """`n` training nodes, drawn once per data set; fixed by index for every model."""
    from relreps.anchors import sample_anchors

    train = np.flatnonzero(data.train_mask.numpy())
    n = min(n, train.size)
    return np.sort(train[sample_anchors(train[:, None].astype(float), n, "uniform",
                                        random_state=seed)])


# ------------------------------------------------------------------------------------------------
# cached training


_MODEL_CACHE_VERSION = "graphs-model-v3"  # v3: sparse adjacency (other float rounding)
_SUMMARY_KEYS = ("best_epoch", "val_acc", "test_acc", "seconds")


def _load_model_entry(path: Any, model: Any) -> dict[str, Any] | None:
    """Load a cached model (a .safetensors file of the state dict, the training summary as JSON
    metadata) into `model`; None, with the entry deleted, unless every tensor matches the
    model's names, shapes and dtypes, is finite, and the summary is well-formed. Never runs code
    from the file."""
    import json

    import torch
    from safetensors import safe_open

    from relreps.cache import discard_entry, regular_file

    if not path.exists() and not path.is_symlink():
        return None
    try:
        if not regular_file(path):
            raise ValueError("not a regular file")
        target = model.state_dict()
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("relreps_cache") != _MODEL_CACHE_VERSION or set(f.keys()) != set(target):
                raise ValueError("another format or model")
            state = {k: f.get_tensor(k) for k in target}
        for k, t in state.items():
            ref = target[k]
            if t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(f"{k}: shape or dtype differs")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{k}: non-finite values")
        summary = json.loads(meta["summary"])
        if not isinstance(summary, dict) or set(summary) != set(_SUMMARY_KEYS):
            raise ValueError("bad summary")
        if not isinstance(summary["best_epoch"], int) or not all(
                isinstance(summary[k], (int, float)) and np.isfinite(summary[k])
                for k in _SUMMARY_KEYS[1:]) or not all(
                0 <= summary[k] <= 1 for k in ("val_acc", "test_acc")):
            raise ValueError("bad summary values")
        model.load_state_dict(state)
    except Exception:  # noqa: BLE001 - a corrupt or foreign entry is retrained (no code ran)
        discard_entry(path)
        return None
    model.eval()
    return summary


def _train_cached(data: Any, config: Any, anchors: np.ndarray | None, seed: int,
                  train_kw: dict[str, Any], tag: str) -> tuple[Any, dict[str, Any]]:
    """Train (or load from the cache) one model; returns (model, summary dict).

    The cache holds the state dict as safetensors and the summary as JSON metadata: data only,
    checked against the freshly built model before use (see `_load_model_entry`).
    """
    import json

    from safetensors.torch import save as safetensors_bytes

    from relreps.cache import cache_dir, content_key, save_entry
    from relreps.models.graph import train_node_classifier

    model = _build(data, config, anchors, seed)
    key = content_key(_MODEL_CACHE_VERSION, tag, data.name, int(data.num_nodes),
                      config.as_dict(), anchors if anchors is not None else "absolute", seed,
                      train_kw)
    path = cache_dir() / "graphs" / f"{key}.safetensors"
    summary = _load_model_entry(path, model)
    if summary is not None:
        return model, summary
    res = train_node_classifier(model, data, seed=seed, **train_kw)
    summary = {"best_epoch": int(res.best_epoch), "val_acc": float(res.best_val_acc),
               "test_acc": float(res.test_acc), "seconds": float(res.seconds)}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_entry(path, safetensors_bytes(state, metadata={"relreps_cache": _MODEL_CACHE_VERSION,
                                                        "summary": json.dumps(summary)}))
    return model, summary


def _build(data: Any, config: Any, anchors: np.ndarray | None, seed: int) -> Any:
    """A freshly initialised node classifier for `data` (relative with `anchors`)."""
    from relreps.models.graph import build_node_classifier

    return build_node_classifier(data.num_features, data.num_classes, config,
                                 anchor_idx=anchors, seed=seed)


# ------------------------------------------------------------------------------------------------
# worker processes: the part-1 models and the sweep models are independent trainings (each
# seeded, CPU-deterministic), so they run side by side in spawned processes with one torch
# thread each, which on a few cores beats one process with several threads on these small
# graphs. A job returns exactly what the in-process code computes (and fills the same cache).

_WORKER_DATA: dict[tuple[str, int], Any] = {}
_WORKER_LIMITS: list[Any] = []


def _worker_init() -> None:
    """Start of a worker process: one torch thread, one BLAS/OpenMP thread."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    _WORKER_LIMITS.append(threadpool_limits(limits=1))


def _worker_dataset(name: str, seed: int) -> Any:
    """The data set `name`, loaded once per worker process exactly as `_run` loads it."""
    if (name, seed) not in _WORKER_DATA:
        _WORKER_DATA[(name, seed)] = _load(name, seed)
    return _WORKER_DATA[(name, seed)]


def _worker_pool(workers: int) -> Any:
    """A context manager giving a pool of `workers` spawned processes, or None for 0 (then
    every job runs in this process)."""
    import contextlib

    if workers <= 0:
        return contextlib.nullcontext(None)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)


def _pool_map(pool: Any, fn: Any, jobs: list[tuple], cost: list[float], desc: str) -> list[Any]:
    """[fn(*job) for job in jobs] on the pool (dearest jobs first, so that no long one is left
    for the end), in the order of `jobs`."""
    from concurrent.futures import as_completed

    from relreps.progress import progress

    order = sorted(range(len(jobs)), key=lambda i: -cost[i])
    out: list[Any] = [None] * len(jobs)
    futures = {pool.submit(fn, *jobs[i]): i for i in order}
    for fut in progress(as_completed(futures), desc=desc, total=len(jobs)):
        out[futures[fut]] = fut.result()
    return out


def _classification_job(name: str, data_seed: int, anchors: np.ndarray | None, seed: int,
                        train_kw: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Worker: one part-1 model (trained or from the cache): its state dict (as numpy arrays:
    plain pickles, no shared-memory tensors between processes) and summary."""
    from relreps.models.graph import GNNConfig

    model, summ = _train_cached(_worker_dataset(name, data_seed), GNNConfig(), anchors, seed,
                                train_kw, "classification")
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}, summ


# ------------------------------------------------------------------------------------------------
# statistics


def correlation_ci(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Pearson and Spearman correlation of x and y, each with a Fisher-z interval (treats points
    as independent) and a bootstrap interval that resamples whole `groups` (models), which is
    the honest one when a group contributes many correlated points (one per epoch)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    groups = np.arange(x.size) if groups is None else np.asarray(groups)[ok]
    out: dict[str, float] = {"n_points": int(x.size), "n_groups": int(np.unique(groups).size)}
    if x.size < 4 or np.std(x) == 0 or np.std(y) == 0:
        return {**out, "pearson": float("nan"), "spearman": float("nan")}
    z = stats.norm.ppf(0.5 + level / 2)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(uniq.size)]
    rng = np.random.default_rng(seed)
    for kind in ("pearson", "spearman"):
        f = stats.pearsonr if kind == "pearson" else stats.spearmanr
        r = float(f(x, y)[0])
        out[kind] = r
        half = z / math.sqrt(max(x.size - 3, 1))
        zr = math.atanh(min(max(r, -0.999999), 0.999999))
        out[f"{kind}_fisher_lo"], out[f"{kind}_fisher_hi"] = (math.tanh(zr - half),
                                                             math.tanh(zr + half))
        boots = []
        for _ in range(n_boot):
            pick = np.concatenate([members[g] for g in rng.integers(0, uniq.size, uniq.size)])
            xb, yb = x[pick], y[pick]
            if np.std(xb) > 0 and np.std(yb) > 0:
                boots.append(f(xb, yb)[0])
        lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]) if boots else (np.nan,
                                                                                       np.nan)
        out[f"{kind}_boot_lo"], out[f"{kind}_boot_hi"] = float(lo), float(hi)
    return out


def _fmt_corr(c: dict[str, float], kind: str) -> str:
    if not np.isfinite(c.get(kind, np.nan)):
        return "-"
    return (f"{c[kind]:.3f} [{c[f'{kind}_fisher_lo']:.3f}, {c[f'{kind}_fisher_hi']:.3f}] "
            f"boot [{c[f'{kind}_boot_lo']:.3f}, {c[f'{kind}_boot_hi']:.3f}]")


# ------------------------------------------------------------------------------------------------
# parts


def _part_classification(ctx: RunContext, plan: dict[str, Any], datasets: dict[str, Any],
                         anchors: dict[str, np.ndarray], pool: Any = None
                         ) -> tuple[list[dict], dict]:
    import torch

    from relreps.models.graph import GNNConfig
    from relreps.progress import progress

    rows, models = [], {}
    cfg = GNNConfig()
    train_kw = {"epochs": plan["epochs"], "lr": 0.01, "weight_decay": 5e-4, "optimizer": "adam",
                "patience": plan["patience"]}
    jobs = [(d, mode, s) for d in datasets for s in ctx.seeds(plan["seeds"])
            for mode in ("absolute", "relative")]
    done = None
    if pool is not None:  # train in the workers, rebuild the trained models here
        done = _pool_map(pool, _classification_job,
                         [(name, ctx.seed, anchors[name] if mode == "relative" else None, seed,
                           train_kw) for name, mode, seed in jobs],
                         [float(datasets[name].num_nodes) for name, _, _ in jobs],
                         "graphs: abs vs rel")
    for i, (name, mode, seed) in enumerate(jobs if done is not None else
                                           progress(jobs, desc="graphs: abs vs rel")):
        data = datasets[name]
        anc = anchors[name] if mode == "relative" else None
        if done is None:
            model, summ = _train_cached(data, cfg, anc, seed, train_kw, "classification")
        else:
            state, summ = done[i]
            model = _build(data, cfg, anc, seed)
            model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            model.eval()
        models[(name, mode, seed)] = model
        rows.append({"part": "classification", "dataset": name, "mode": mode, "seed": seed,
                     **summ})
    return rows, models


def _part_stitching(ctx: RunContext, plan: dict[str, Any], datasets: dict[str, Any],
                    models: dict) -> tuple[list[dict], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relreps.models.graph import stitched_accuracy

    rows, figs = [], []
    seeds = ctx.seeds(min(plan["stitch_seeds"], plan["seeds"]))
    names = list(datasets)
    fig, axes = plt.subplots(len(names), 2, figsize=(8, 3.8 * len(names)), squeeze=False)
    for di, name in enumerate(names):
        for mi, mode in enumerate(("absolute", "relative")):
            mat = np.zeros((len(seeds), len(seeds)))
            for i, si in enumerate(seeds):
                for j, sj in enumerate(seeds):
                    acc = stitched_accuracy(models[(name, mode, si)], models[(name, mode, sj)],
                                            datasets[name])
                    mat[i, j] = acc
                    rows.append({"part": "stitching", "dataset": name, "mode": mode,
                                 "encoder_seed": si, "head_seed": sj, "stitched": i != j,
                                 "test_acc": acc})
            ax = axes[di, mi]
            im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name} {mode}")
            ax.set_xlabel("head (classifier) seed")
            ax.set_ylabel("encoder seed")
            ax.set_xticks(range(len(seeds)), [str(s) for s in seeds], fontsize=6)
            ax.set_yticks(range(len(seeds)), [str(s) for s in seeds], fontsize=6)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(ctx.figure_path("graphs_stitching"), dpi=110)
    plt.close(fig)
    figs.append("graphs_stitching.png")
    return rows, figs


def _part_anchor_counts(ctx: RunContext, plan: dict[str, Any], datasets: dict[str, Any],
                        models: dict) -> tuple[list[dict], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from sklearn.linear_model import LogisticRegression

    from relreps.anchors import diagnose, sample_anchors
    from relreps.models.graph import graph_input
    from relreps.progress import progress
    from relreps.projection import relative_projection

    rows = []
    methods = ("uniform", "kmeans", "farthest_point")
    names = list(datasets)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for di, name in enumerate(names):
        data = datasets[name]
        model = models[(name, "absolute", ctx.seed)]  # frozen encoder, trained without anchors
        with torch.no_grad():
            z = model.encoder.eval()(data.x, graph_input(data)).numpy().astype(np.float64)
        y = data.y.numpy()
        tr, te = data.train_mask.numpy(), data.test_mask.numpy()
        ztr = z[tr]
        base = LogisticRegression(max_iter=2000).fit(ztr, y[tr]).score(z[te], y[te])
        rows.append({"part": "anchors", "dataset": name, "method": "absolute", "n_anchors": 0,
                     "anchor_seed": 0, "test_acc": float(base), "rank": z.shape[1],
                     "effective_dim": float("nan"), "latent_dim": z.shape[1]})
        counts = [c for c in plan["anchor_counts"] if c <= ztr.shape[0]]
        jobs = [(m, c, s) for m in methods for c in counts
                for s in ctx.seeds(plan["anchor_seeds"])]
        for method, count, s in progress(jobs, desc=f"graphs: anchors {name}"):
            idx = sample_anchors(ztr, count, method, random_state=s)
            a = ztr[idx]
            diag = diagnose(a)
            r = relative_projection(z, a)
            acc = LogisticRegression(max_iter=2000).fit(r[tr], y[tr]).score(r[te], y[te])
            rows.append({"part": "anchors", "dataset": name, "method": method,
                         "n_anchors": count, "anchor_seed": s, "test_acc": float(acc),
                         "rank": diag.rank, "effective_dim": diag.effective_dim,
                         "latent_dim": z.shape[1]})
        ax = axes[0, di]
        ax2 = ax.twinx()
        for method, color in zip(methods, ("C0", "C1", "C2")):
            sub = [r for r in rows if r["dataset"] == name and r["method"] == method]
            cs = sorted({r["n_anchors"] for r in sub})
            acc = np.array([[r["test_acc"] for r in sub if r["n_anchors"] == c] for c in cs])
            ax.errorbar(cs, acc.mean(1), yerr=acc.std(1), color=color, marker="o", ms=3,
                        label=f"accuracy ({method})")
            rk = [np.mean([r["rank"] for r in sub if r["n_anchors"] == c]) for c in cs]
            ed = [np.mean([r["effective_dim"] for r in sub if r["n_anchors"] == c]) for c in cs]
            ax2.plot(cs, rk, color=color, ls="--", lw=1, label=f"rank ({method})")
            ax2.plot(cs, ed, color=color, ls=":", lw=1, label=f"effective dim ({method})")
        ax.axhline(base, color="k", lw=0.8, label="absolute head")
        ax.axvline(z.shape[1], color="gray", lw=0.8, ls="-.")
        ax.set_xscale("log")
        ax.set_xlabel("number of anchors (log)")
        ax.set_ylabel("test accuracy")
        ax2.set_ylabel("anchor rank / effective dim")
        ax.set_title(f"{name}: frozen encoder (latent dim {z.shape[1]}, grey line)")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(ctx.figure_path("graphs_anchor_counts"), dpi=110)
    plt.close(fig)
    return rows, ["graphs_anchor_counts.png"]


def _sample_configs(n: int, seed: int, epochs_choices: tuple[int, ...]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = {k: v[int(rng.integers(len(v)))] for k, v in SWEEP_SPACE.items()}
        c["epochs"] = int(epochs_choices[int(rng.integers(len(epochs_choices)))])
        c["seed"] = int(seed * 1000 + i)
        out.append(c)
    return out


def _sweep_model(data: Any, anchors: np.ndarray, ref: dict[str, np.ndarray],
                 c: dict[str, Any]) -> np.ndarray:
    """Train one sweep model; per epoch: [epoch, val_acc, test_acc, sim_rel, sim_abs, cka_abs]."""
    from relreps.errors import RelrepsError
    from relreps.metrics import cka, mean_cosine
    from relreps.models.graph import (
        GNNConfig,
        accuracy,
        build_node_classifier,
        train_node_classifier,
    )

    cfg = GNNConfig(hidden=ref["abs"].shape[1], depth=c["depth"], dropout=c["dropout"],
                    activation=c["activation"], conv=c["conv"])
    model = build_node_classifier(data.num_features, data.num_classes, cfg, anchor_idx=anchors,
                                  seed=c["seed"])
    recs: list[list[float]] = []

    def metric(f: Any, a: np.ndarray, b: np.ndarray) -> float:
        try:
            return float(f(a, b))
        except RelrepsError:  # zero or non-finite latents: similarity undefined
            return float("nan")

    def on_epoch(epoch: int, out: Any) -> None:
        z, r = out.latent.numpy(), out.relative.numpy()
        recs.append([epoch, accuracy(out.logits, data.y, data.val_mask),
                     accuracy(out.logits, data.y, data.test_mask),
                     metric(mean_cosine, r, ref["rel"]), metric(mean_cosine, z, ref["abs"]),
                     metric(cka, z, ref["abs"])])

    try:
        train_node_classifier(model, data, epochs=c["epochs"], lr=c["lr"], weight_decay=5e-4,
                              optimizer=c["optimizer"], seed=c["seed"], restore_best=False,
                              on_epoch=on_epoch)
    except RelrepsError:  # diverged (non-finite latents): keep the epochs recorded so far
        pass
    return np.array(recs, dtype=np.float64).reshape(-1, 6)


def _sweep_rows_ok(arr: np.ndarray, epochs: int) -> bool:
    """A sweep record: at most `epochs` rows of [epoch, val_acc, test_acc, 3 similarities] with
    whole, increasing epochs and accuracies in [0, 1] (similarities may be NaN: undefined)."""
    if arr.shape[0] > epochs or not np.isfinite(arr[:, :3]).all():
        return False
    e = arr[:, 0]
    return bool(np.all(e == np.round(e)) and np.all(np.diff(e) > 0) and
                np.all((arr[:, 1:3] >= 0) & (arr[:, 1:3] <= 1)) and
                np.all(np.isnan(arr[:, 3:]) | (np.abs(arr[:, 3:]) <= 1 + 1e-6)))


def _sweep_cached(data: Any, anchors: np.ndarray, ref: dict[str, np.ndarray],
                  c: dict[str, Any]) -> np.ndarray:
    """One sweep model's per-epoch record (`_sweep_model`), from the cache or trained."""
    from relreps.cache import cached_array, content_key

    key = content_key("graphs-sweep-v3", data.name, int(data.num_nodes), anchors,
                      content_key(ref["rel"], ref["abs"]), c)
    return cached_array("graphs-sweep", key, lambda: _sweep_model(data, anchors, ref, c),
                        shape=(None, 6), dtype=np.float64, finite=False,
                        check=lambda a: _sweep_rows_ok(a, c["epochs"]))


def _sweep_job(name: str, data_seed: int, anchors: np.ndarray, ref: dict[str, np.ndarray],
               c: dict[str, Any]) -> np.ndarray:
    """Worker: `_sweep_cached` on the data set `name`."""
    return _sweep_cached(_worker_dataset(name, data_seed), anchors, ref, c)


def _part_sweep(ctx: RunContext, plan: dict[str, Any], data: Any, anchors: np.ndarray,
                pool: Any = None
                ) -> tuple[list[dict], dict[str, str], list[str], dict[str, Any], list[str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from relreps.models.graph import GNNConfig, graph_input
    from relreps.progress import progress
    from relreps.report import markdown_table

    ref_cfg = GNNConfig()
    ref_kw = {"epochs": plan["ref_epochs"], "lr": 0.01, "weight_decay": 5e-4, "optimizer": "adam",
              "patience": plan["patience"]}
    ref_model, ref_summ = _train_cached(data, ref_cfg, anchors, ctx.seed + 10_000, ref_kw,
                                        "reference")
    with torch.no_grad():
        out = ref_model(data.x, graph_input(data))
    ref = {"abs": out.latent.numpy(), "rel": out.relative.numpy()}
    configs = _sample_configs(plan["sweep_models"], ctx.seed + 7, plan["sweep_epochs"])
    if pool is None:
        arrays = [_sweep_cached(data, anchors, ref, c)
                  for c in progress(configs, desc="graphs: similarity sweep")]
    else:
        arrays = _pool_map(pool, _sweep_job,
                           [(plan["sweep_dataset"], ctx.seed, anchors, ref, c) for c in configs],
                           [c["epochs"] * (c["depth"] + 1) for c in configs],
                           "graphs: similarity sweep")
    rows = []
    for mid, (c, arr) in enumerate(zip(configs, arrays)):
        for e, va, te, sr, sa, ck in arr:
            rows.append({"part": "sweep", "dataset": data.name, "model": mid, **c,
                         "epoch": int(e), "val_acc": va, "test_acc": te, "sim_relative": sr,
                         "sim_absolute": sa, "cka_absolute": ck})
    n_nan = int(sum(1 for r in rows if not np.isfinite(r["sim_relative"])))
    n_div = sum(1 for mid, c in enumerate(configs)
                if sum(1 for r in rows if r["model"] == mid) < c["epochs"])
    grp = np.array([r["model"] for r in rows])
    acc = np.array([r["val_acc"] for r in rows], float)
    measures = {"relative: mean cosine": "sim_relative", "absolute: mean cosine": "sim_absolute",
                "absolute: linear CKA": "cka_absolute"}
    corr, corr_final = {}, {}
    last = {}
    for i, r in enumerate(rows):
        last[r["model"]] = i
    last_idx = np.array(sorted(last.values()))
    for label, col in measures.items():
        v = np.array([r[col] for r in rows], float)
        corr[label] = correlation_ci(v, acc, grp, n_boot=plan["bootstrap"], seed=ctx.seed)
        corr_final[label] = correlation_ci(v[last_idx], acc[last_idx], None,
                                           n_boot=plan["bootstrap"], seed=ctx.seed)
    table_rows = []
    for label in measures:
        for scope, cc in (("every (model, epoch)", corr[label]), ("last epoch", corr_final[label])):
            table_rows.append([label, scope, cc["n_points"], _fmt_corr(cc, "pearson"),
                               _fmt_corr(cc, "spearman")])
    tables = {f"Similarity to the reference vs validation accuracy ({data.name}, "
              f"{len(configs)} models)": markdown_table(
                  ["similarity", "points", "n", "Pearson [Fisher 95%] boot-by-model [95%]",
                   "Spearman [Fisher 95%] boot-by-model [95%]"], table_rows)}
    notes = [f"Sweep reference: {ref_cfg.conv}, depth {ref_cfg.depth}, hidden {ref_cfg.hidden}, "
             f"relative, val acc {ref_summ['val_acc']:.3f}, test acc {ref_summ['test_acc']:.3f}. "
             f"{n_div} of {len(configs)} sweep models diverged before their last epoch (their "
             f"recorded epochs are kept); {n_nan} points had undefined similarity."]
    # figures
    sim_r = np.array([r["sim_relative"] for r in rows], float)
    sim_a = np.array([r["sim_absolute"] for r in rows], float)
    cka_a = np.array([r["cka_absolute"] for r in rows], float)
    ep = np.array([r["epoch"] for r in rows], float)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, v, label in zip(axes, (sim_r, sim_a, cka_a), measures):
        sc = ax.scatter(v, acc, c=np.log10(ep), s=3, alpha=0.5, cmap="viridis")
        cc = corr[label]
        ax.set_title(f"{label}\nPearson {cc.get('pearson', np.nan):.3f}, "
                     f"Spearman {cc.get('spearman', np.nan):.3f}", fontsize=9)
        ax.set_xlabel("similarity to the reference model")
        ax.set_ylabel("validation accuracy")
    fig.colorbar(sc, ax=axes, label="log10 epoch", fraction=0.02)
    fig.savefig(ctx.figure_path("graphs_similarity_scatter"), dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("plasma")
    for mid in range(len(configs))[: min(40, len(configs))]:
        sub = [r for r in rows if r["model"] == mid]
        if not sub:
            continue
        col = cmap(float(np.nan_to_num(sub[-1]["val_acc"])))
        axes[0].plot([r["epoch"] for r in sub], [r["sim_relative"] for r in sub], color=col,
                     lw=0.8)
        axes[1].plot([r["epoch"] for r in sub], [r["val_acc"] for r in sub], color=col, lw=0.8)
    axes[0].set_ylabel("relative similarity to the reference")
    axes[1].set_ylabel("validation accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_xscale("log")
    fig.suptitle("Similarity over training (first 40 sweep models; colour: final val accuracy)")
    fig.tight_layout()
    fig.savefig(ctx.figure_path("graphs_similarity_curves"), dpi=110)
    plt.close(fig)
    rel = corr["relative: mean cosine"]
    summary = {"sweep_models": len(configs), "sweep_points": int(len(rows)),
               "sweep_pearson_relative": _fmt_corr(rel, "pearson"),
               "sweep_spearman_relative": _fmt_corr(rel, "spearman"),
               "sweep_pearson_absolute": _fmt_corr(corr["absolute: mean cosine"], "pearson"),
               "sweep_pearson_cka_absolute": _fmt_corr(corr["absolute: linear CKA"], "pearson"),
               "goal_similarity_correlation_ge_0.9": bool(rel.get("pearson", 0) >= 0.9)}
    rows += [{"part": "correlation", "measure": label, "scope": scope, **cc}
             for label in measures
             for scope, cc in (("all", corr[label]), ("last_epoch", corr_final[label]))]
    return (rows, tables, ["graphs_similarity_scatter.png", "graphs_similarity_curves.png"],
            summary, notes)


def run(ctx: RunContext) -> Results:
    import contextlib

    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    limit = contextlib.nullcontext()
    if "threads" in ctx.options or ctx.smoke:  # tiny graphs: one thread is fastest
        n = int(ctx.options.get("threads", 1))
        torch.set_num_threads(n)
        limit = threadpool_limits(limits=n)  # BLAS/OpenMP in numpy, scikit-learn
    plan = _plan(ctx)
    try:
        with limit, _worker_pool(plan["workers"]) as pool:
            return _run(ctx, plan, pool)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: RunContext, plan: dict[str, Any], pool: Any) -> Results:
    import time

    import torch

    from relreps.report import aggregate, markdown_table, pivot_table

    ctx.log(f"graphs: plan {plan}")
    times: dict[str, float] = {}
    t = time.perf_counter()
    datasets = {name: _load(name, ctx.seed) for name in plan["datasets"]}
    anchors = {name: _anchor_nodes(d, plan["anchors"], ctx.seed) for name, d in datasets.items()}
    results = Results()

    t = time.perf_counter()
    rows, models = _part_classification(ctx, plan, datasets, anchors, pool)
    times["1 absolute vs relative"] = time.perf_counter() - t
    results.rows += rows
    results.tables["1. Node classification: test accuracy (%) at the best validation epoch"] = \
        pivot_table(rows, index="dataset", columns="mode", value="test_acc", scale=100)
    gaps = {}
    for name in datasets:
        m = {a["mode"]: a["mean"] for a in aggregate(
            [r for r in rows if r["dataset"] == name], ["mode"], "test_acc")}
        gaps[name] = round(100 * (m["absolute"] - m["relative"]), 2)
    results.summary["abs_minus_rel_points"] = gaps
    results.summary["goal_relative_within_2_points"] = bool(all(abs(g) <= 2 for g in
                                                                gaps.values()))

    t = time.perf_counter()
    srows, figs = _part_stitching(ctx, plan, datasets, models)
    times["4 stitching"] = time.perf_counter() - t
    results.rows += srows
    results.figures += figs
    agg = aggregate(srows, ["dataset", "mode", "stitched"], "test_acc")
    results.tables["4. Stitching: encoder of seed i + classifier of seed j, test accuracy (%)"] = \
        markdown_table(["dataset", "mode", "same seed (i = j)", "stitched (i != j)"],
                       [[name, mode, *(f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f}"
                                       for st in (False, True) for a in agg
                                       if a["dataset"] == name and a["mode"] == mode
                                       and a["stitched"] == st)]
                        for name in datasets for mode in ("absolute", "relative")])
    results.summary["stitching"] = {f"{a['dataset']}/{a['mode']}/"
                                    f"{'stitched' if a['stitched'] else 'same'}":
                                    round(a["mean"], 4) for a in agg}

    t = time.perf_counter()
    arows, figs = _part_anchor_counts(ctx, plan, datasets, models)
    times["3 anchor counts"] = time.perf_counter() - t
    results.rows += arows
    results.figures += figs
    for name in datasets:
        sub = [r for r in arows if r["dataset"] == name and r["method"] != "absolute"]
        base = next(r["test_acc"] for r in arows if r["dataset"] == name
                    and r["method"] == "absolute")
        tab = pivot_table(sub, index="n_anchors", columns="method", value="test_acc", scale=100,
                          digits=1)
        diag = {a["n_anchors"]: a["mean"] for a in aggregate(
            [r for r in sub if r["method"] == "uniform"], ["n_anchors"], "effective_dim")}
        rank = {a["n_anchors"]: a["mean"] for a in aggregate(
            [r for r in sub if r["method"] == "uniform"], ["n_anchors"], "rank")}
        diag_tab = markdown_table(["anchors", "rank (uniform)", "effective dim (uniform)"],
                                  [[k, f"{rank[k]:.0f}", f"{diag[k]:.1f}"] for k in diag])
        results.tables[f"3. Anchor count, {name}: relative logistic-regression head on a frozen "
                       f"encoder, test accuracy (%) (absolute head: {100 * base:.1f})"] = tab
        results.tables[f"3. Anchor diagnostics, {name} (latent dim "
                       f"{sub[0]['latent_dim']})"] = diag_tab

    sweep_name = plan["sweep_dataset"]
    if sweep_name not in datasets:
        datasets[sweep_name] = _load(sweep_name, ctx.seed)
        anchors[sweep_name] = _anchor_nodes(datasets[sweep_name], plan["anchors"], ctx.seed)
    t = time.perf_counter()
    wrows, tables, figs, summ, notes = _part_sweep(ctx, plan, datasets[sweep_name],
                                                   anchors[sweep_name], pool)
    times["2 similarity sweep"] = time.perf_counter() - t
    results.rows += wrows
    results.tables.update({f"2. {k}": v for k, v in tables.items()})
    results.figures += figs
    results.summary.update(summ)
    results.notes += notes
    results.summary["seconds_per_part"] = {k: round(v, 1) for k, v in times.items()}
    results.summary["torch_threads"] = torch.get_num_threads()
    results.summary["worker_processes"] = plan["workers"]
    results.notes += [
        "Planetoid 'full' split (same 500 validation and 1,000 test nodes as the public split, "
        "all other nodes train) so that 300 anchors can be training nodes, as in the paper. "
        "PubMed is not available offline.",
        f"Anchors: {plan['anchors']} training nodes drawn once per data set (seed {ctx.seed}), "
        "the same nodes for every model (fixed by index); re-embedded in every forward pass.",
        "Encoder: 2-layer GCN, hidden 64, dropout 0.5, ReLU; linear head on the latents "
        "(absolute) or on the cosine similarities to the anchors (relative); Adam lr 0.01, "
        "weight decay 5e-4; up to the plan's epochs with early stopping (patience); test accuracy "
        "at the best validation epoch.",
        "Part 3 heads are logistic regressions on the frozen encoder's relative space.",
        "The sweep CIs: 'Fisher' treats every (model, epoch) point as independent (too narrow); "
        "'boot' resamples whole models.",
    ]
    return results

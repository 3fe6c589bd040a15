"""Latent-space metrics against brute force, hand-computed values and their invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import metrics as M
from relreps import relative_projection
from relreps.errors import RelrepsError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------- brute force

def brute_retrieval(source: np.ndarray, target: np.ndarray, k: int, queries=None):
    """The paper's definitions with a full N x N cosine matrix and a full sort."""
    sim_st = _unit(source) @ _unit(target).T
    sim_tt = _unit(target) @ _unit(target).T
    rows = range(len(source)) if queries is None else queries
    jac, rr = [], []
    for i in rows:
        s_top = list(np.argsort(-sim_st[i], kind="stable")[:k])
        t_top = list(np.argsort(-sim_tt[i], kind="stable")[:k])
        rr.append(1.0 / (s_top.index(i) + 1) if i in s_top else 0.0)
        jac.append(len(set(s_top) & set(t_top)) / len(set(s_top) | set(t_top)))
    return float(np.mean(jac)), float(np.mean(rr))


def brute_mutual_knn(a: np.ndarray, b: np.ndarray, k: int) -> float:
    def neigh(x):
        s = _unit(x) @ _unit(x).T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k]) for row in s]

    na, nb = neigh(a), neigh(b)
    return float(np.mean([len(p & q) / k for p, q in zip(na, nb)]))


def noisy_pair(seed: int, n: int, d: int, noise: float):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, d))
    return rng, src, src + noise * rng.normal(size=(n, d))


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(8, 60), d=st.integers(2, 10),
       k=st.integers(1, 8), noise=st.sampled_from([0.1, 0.5, 2.0]),
       block=st.sampled_from([None, 1, 3, 7]), subset=st.booleans())
def test_retrieval_metrics_equal_brute_force(seed, n, d, k, noise, block, subset):
    rng, src, tgt = noisy_pair(seed, n, d, noise)
    k = min(k, n)
    queries = np.sort(rng.choice(n, size=max(1, n // 3), replace=False)) if subset else None
    jac, mrr = brute_retrieval(src, tgt, k, queries)
    got = M.retrieval_metrics(src, tgt, k, queries=queries, block_size=block)
    assert got["jaccard"] == pytest.approx(jac, abs=1e-12)
    assert got["mrr"] == pytest.approx(mrr, abs=1e-12)
    assert M.jaccard_at_k(src, tgt, k, queries=queries, block_size=block) == got["jaccard"]
    assert M.mrr_at_k(src, tgt, k, queries=queries, block_size=block) == got["mrr"]


def test_retrieval_metrics_hand_computed():
    # Target: four points on the unit circle at 0, 90, 180, 270 degrees (plus noise in angle).
    ang_t = np.radians([0, 90, 180, 270])
    target = np.c_[np.cos(ang_t), np.sin(ang_t)]
    # Source vectors: 0 -> 10 deg (nearest target 0, then 1), 1 -> 170 deg (nearest 2, then 1),
    # 2 -> 185 deg (nearest 2, then 3), 3 -> 80 deg (nearest 1, then 0).
    ang_s = np.radians([10, 170, 185, 80])
    source = np.c_[np.cos(ang_s), np.sin(ang_s)]
    # k = 1: hits only for sample 0 and 2 -> MRR 2/4; S = {0}, {2}, {2}, {1};
    # T_i = {i}; Jaccard = (1 + 0 + 1 + 0) / 4.
    assert M.mrr_at_k(source, target, 1) == pytest.approx(0.5)
    assert M.jaccard_at_k(source, target, 1) == pytest.approx(0.5)
    # k = 2: ranks of i: 0 -> 1, 1 -> 2, 2 -> 1, 3 -> absent: MRR = (1 + 1/2 + 1 + 0) / 4.
    assert M.mrr_at_k(source, target, 2) == pytest.approx(2.5 / 4)
    # T_i at k=2: each target's nearest is itself, then a 90-degree neighbour (tie between the
    # two); Jaccard is checked against brute force instead of hard-coding the tie order.
    jac, mrr = brute_retrieval(source, target, 2)
    assert M.mrr_at_k(source, target, 2) == pytest.approx(mrr)


def test_identical_spaces_score_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    for k in (1, 5, 49):
        assert M.jaccard_at_k(x, x, k) == pytest.approx(1.0)
        assert M.mrr_at_k(x, x, k) == pytest.approx(1.0)
    assert M.mean_cosine(x, x) == pytest.approx(1.0)
    assert M.mutual_knn(x, x, 5) == pytest.approx(1.0)


def test_metrics_invariant_to_a_shared_rotation_and_relative_spaces_undo_target_rotation():
    rng, src, tgt = noisy_pair(1, 80, 8, 0.5)
    q = _orthogonal(rng, 8)
    base = M.retrieval_metrics(src, tgt, 5)
    rotated_both = M.retrieval_metrics(src @ q, tgt @ q, 5)
    assert rotated_both == pytest.approx(base, abs=1e-12)
    # Rotating only the target space (another model's latent space) destroys absolute
    # agreement but not relative agreement (each space projected on its own anchors).
    moved = tgt @ q * 3.0
    absolute = M.retrieval_metrics(src, moved, 5)
    assert absolute["mrr"] < base["mrr"] - 0.3
    anchors = np.arange(0, 80, 4)
    rel_src = relative_projection(src, src[anchors])
    rel_base = M.retrieval_metrics(rel_src, relative_projection(tgt, tgt[anchors]), 5)
    rel_moved = M.retrieval_metrics(rel_src, relative_projection(moved, moved[anchors]), 5)
    assert rel_moved == pytest.approx(rel_base, abs=1e-9)
    assert rel_moved["mrr"] > absolute["mrr"] + 0.3


def test_metrics_accept_torch_and_agree_with_numpy():
    _, src, tgt = noisy_pair(2, 30, 5, 0.5)
    got = M.retrieval_metrics(torch.tensor(src), torch.tensor(tgt), 3)
    assert got == M.retrieval_metrics(src, tgt, 3)
    assert M.mean_cosine(torch.tensor(src), torch.tensor(tgt)) == pytest.approx(
        M.mean_cosine(src, tgt))


def test_retrieval_metric_errors():
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(RelrepsError, match="rows must correspond"):
        M.jaccard_at_k(x, x[:9])
    with pytest.raises(RelrepsError, match="needs equal widths"):
        M.mrr_at_k(x, x[:, :3])
    with pytest.raises(RelrepsError, match="k must be between 1 and 10"):
        M.mrr_at_k(x, x, k=11)
    with pytest.raises(RelrepsError, match="k must be between 1 and 10"):
        M.mrr_at_k(x, x, k=0)
    with pytest.raises(RelrepsError, match="no queries"):
        M.mrr_at_k(x, x, queries=[])
    for bad in ([-1], [10], [[0, 1]]):  # -1 would search row 9 but score row -1: always 0
        with pytest.raises(RelrepsError, match=r"queries must be row indices in \[0, 10\)"):
            M.mrr_at_k(x, x, queries=bad)
    with pytest.raises(RelrepsError, match="metric must be"):
        M.mrr_at_k(x, x, metric="l2")
    z = x.copy()
    z[3] = 0
    with pytest.raises(RelrepsError, match=r"zero vectors \(rows \[3\]\)"):
        M.jaccard_at_k(z, x)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(RelrepsError, match="NaN or inf"):
        M.jaccard_at_k(x, bad)


# --------------------------------------------------------------------------- knn_indices

@SETTINGS
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 20), nb=st.integers(2, 30),
       k=st.integers(1, 6), block=st.sampled_from([None, 1, 4]),
       metric=st.sampled_from(["cosine", "inner"]), exclude=st.booleans())
def test_knn_indices_equal_brute_force(seed, nq, nb, k, block, metric, exclude):
    rng = np.random.default_rng(seed)
    q, b = rng.normal(size=(nq, 4)), rng.normal(size=(nb, 4))
    k = min(k, nb - 1)
    ex = rng.integers(0, nb, size=nq) if exclude else None
    sims = (_unit(q) @ _unit(b).T) if metric == "cosine" else q @ b.T
    if ex is not None:
        sims[np.arange(nq), ex] = -np.inf
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    got = M.knn_indices(q, b, k, metric=metric, exclude=ex, block_size=block)
    np.testing.assert_array_equal(got, expected)
    if ex is not None:
        assert not (got == ex[:, None]).any()


def test_knn_exclude_self_and_k_bounds():
    x = np.random.default_rng(3).normal(size=(6, 3))
    got = M.knn_indices(x, x, 5, exclude=np.arange(6))
    assert all(sorted(row) == sorted(set(range(6)) - {i}) for i, row in enumerate(got))
    with pytest.raises(RelrepsError, match="k must be between 1 and 5"):
        M.knn_indices(x, x, 6, exclude=np.arange(6))
    with pytest.raises(RelrepsError, match="width"):
        M.knn_indices(x, x[:, :2], 1)


# --------------------------------------------------------------------------- mutual kNN

@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(4, 40), k=st.integers(1, 6),
       noise=st.sampled_from([0.05, 0.5, 3.0]), block=st.sampled_from([None, 2]))
def test_mutual_knn_equals_brute_force(seed, n, k, noise, block):
    rng, a, b = noisy_pair(seed, n, 5, noise)
    b = np.c_[b, rng.normal(size=(n, 2))]  # different widths are fine
    k = min(k, n - 1)
    assert M.mutual_knn(a, b, k, block_size=block) == pytest.approx(brute_mutual_knn(a, b, k))


def test_mutual_knn_is_invariant_to_rotation_and_scale_of_either_space():
    rng, a, b = noisy_pair(7, 50, 6, 0.7)
    ref = M.mutual_knn(a, b, 5)
    assert 0 < ref < 1
    assert M.mutual_knn(a, 2.0 * b @ _orthogonal(rng, 6), 5) == pytest.approx(ref)

"""GNN encoders, absolute and relative node classifiers, training loop and stitching."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch_geometric")
import torch  # noqa: E402

from relreps.datasets.graphs import synthetic_graph  # noqa: E402
from relreps.errors import RelrepsError  # noqa: E402
from relreps.experiments.graphs import correlation_ci  # noqa: E402
from relreps.models.graph import (  # noqa: E402
    CONVS,
    GNNConfig,
    build_node_classifier,
    graph_input,
    sparse_adjacency,
    sparse_features,
    stitched_accuracy,
    train_node_classifier,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny graphs: one torch thread is fastest, and it behaves on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph(n_nodes=240, n_classes=4, n_features=16, p_in=0.05, seed=1)


@pytest.fixture(scope="module")
def anchors(graph):
    return np.flatnonzero(graph.train_mask.numpy())[:20]


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("depth", [1, 3])
def test_every_conv_gives_latents_and_relative_vectors(graph, anchors, conv, depth):
    cfg = GNNConfig(hidden=8, depth=depth, conv=conv, activation="tanh")
    m = build_node_classifier(graph.num_features, 4, cfg, anchor_idx=anchors).eval()
    out = m(graph.x, graph.edge_index)
    assert out.latent.shape == (240, 8) and out.logits.shape == (240, 4)
    assert out.relative.shape == (240, 20)
    assert out.relative.abs().max() <= 1 + 1e-5  # cosine similarities
    # the anchors' own rows: similarity 1 to themselves
    diag = out.relative[torch.as_tensor(anchors), torch.arange(20)]
    assert torch.allclose(diag, torch.ones(20), atol=1e-5)
    a = build_node_classifier(graph.num_features, 4, cfg).eval()(graph.x, graph.edge_index)
    assert a.relative is None and a.logits.shape == (240, 4)


def test_sparse_features_give_the_same_outputs(graph, anchors):
    m = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=8), anchor_idx=anchors)
    m.eval()
    dense = m(graph.x, graph.edge_index).logits
    sp = sparse_features(graph)
    assert sp.x.layout == torch.sparse_csr and graph.x.layout == torch.strided
    assert torch.allclose(m(sp.x, sp.edge_index).logits, dense, atol=1e-5)


@pytest.mark.parametrize("conv", CONVS)
def test_sparse_adjacency_gives_the_same_outputs_and_gradients(graph, anchors, conv):
    """The CSR adjacency aggregates like the edge list, in the edges' direction (a directed
    graph: only edges from lower to higher node ids, so a transposed matrix would differ)."""
    import copy

    directed = copy.copy(graph)
    ei = graph.edge_index
    directed.edge_index = ei[:, ei[0] < ei[1]]
    sp = sparse_adjacency(directed)
    assert graph_input(directed) is directed.edge_index
    assert graph_input(sp).layout == torch.sparse_csr and sp.edge_index is directed.edge_index
    cfg = GNNConfig(hidden=8, depth=2, conv=conv, activation="tanh", dropout=0.0)
    m = build_node_classifier(graph.num_features, 4, cfg, anchor_idx=anchors)
    outs, grads = [], []
    for d in (directed, sp):
        m.zero_grad()
        out = m(d.x, graph_input(d))
        out.logits.square().sum().backward()
        outs.append(out.logits.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)
    if conv in ("sage", "graph"):  # no self-loops: the transposed graph aggregates otherwise
        flipped = copy.copy(directed)
        flipped.edge_index = directed.edge_index.flip(0)
        assert not torch.allclose(m(d.x, flipped.edge_index).logits, outs[1], atol=1e-3)


def test_training_learns_and_is_deterministic(graph, anchors):
    def fit(seed, rel):
        m = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=16),
                                  anchor_idx=anchors if rel else None, seed=seed)
        seen = []
        res = train_node_classifier(m, graph, epochs=40, seed=seed,
                                    on_epoch=lambda e, out: seen.append(e))
        return m, res, seen

    m1, r1, seen = fit(0, True)
    _, r2, _ = fit(0, True)
    _, r3, _ = fit(1, True)
    assert seen == list(range(1, 41)) and len(r1.history) == 40
    assert r1.history == r2.history  # same seed, same run
    assert r1.history != r3.history
    assert r1.test_acc > 0.6  # chance is 0.25
    assert r1.history[r1.best_epoch - 1]["val_acc"] == r1.best_val_acc
    # best weights restored: evaluating again gives the best epoch's test accuracy
    assert stitched_accuracy(m1, m1, graph) == pytest.approx(r1.test_acc)
    # the same training on the sparse adjacency: the same run up to float rounding
    m4 = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=16), anchor_idx=anchors,
                               seed=0)
    r4 = train_node_classifier(m4, sparse_adjacency(graph), epochs=40, seed=0)
    assert [h["val_acc"] for h in r4.history] == [h["val_acc"] for h in r1.history]
    assert np.allclose([h["loss"] for h in r4.history], [h["loss"] for h in r1.history],
                       rtol=1e-4)


def test_relative_heads_stitch_across_seeds_better_than_absolute(graph, anchors):
    def fit(seed, rel):
        m = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=16),
                                  anchor_idx=anchors if rel else None, seed=seed)
        train_node_classifier(m, graph, epochs=60, seed=seed)
        return m

    rel = [fit(s, True) for s in (0, 1)]
    ab = [fit(s, False) for s in (0, 1)]
    rel_st = np.mean([stitched_accuracy(rel[0], rel[1], graph),
                      stitched_accuracy(rel[1], rel[0], graph)])
    abs_st = np.mean([stitched_accuracy(ab[0], ab[1], graph),
                      stitched_accuracy(ab[1], ab[0], graph)])
    assert rel_st > abs_st + 0.1
    with pytest.raises(RelrepsError):
        stitched_accuracy(rel[0], ab[0], graph)
    other = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=16),
                                  anchor_idx=anchors[::-1].copy())
    with pytest.raises(RelrepsError, match="same anchor"):
        stitched_accuracy(rel[0], other, graph)


@pytest.mark.parametrize("bad", [{"conv": "gat"}, {"activation": "swish"}, {"depth": 0},
                                 {"dropout": 1.0}, {"head": "knn"}])
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(RelrepsError):
        GNNConfig(**bad)


def test_unknown_optimizer_is_rejected(graph):
    m = build_node_classifier(graph.num_features, 4, GNNConfig(hidden=4))
    with pytest.raises(RelrepsError, match="optimizer"):
        train_node_classifier(m, graph, epochs=1, optimizer="lbfgs")


def test_correlation_ci_separates_related_from_unrelated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    groups = np.repeat(np.arange(30), 10)
    c = correlation_ci(x, 2 * x + 0.1 * rng.normal(size=300), groups, n_boot=200)
    assert c["pearson"] > 0.99 and c["pearson_boot_lo"] > 0.98 and c["spearman"] > 0.98
    assert c["pearson_fisher_lo"] <= c["pearson"] <= c["pearson_fisher_hi"]
    u = correlation_ci(x, rng.normal(size=300), groups, n_boot=200)
    assert u["pearson_boot_lo"] < 0 < u["pearson_boot_hi"]
    assert u["n_groups"] == 30 and u["n_points"] == 300

"""compare_layers: hooks, batches, estimators, restored model state, errors and the heatmap."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from relreps import metrics as M
from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed: int, widths=(5, 16, 8, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))  # rewrites the hooked Linear output in place
    return nn.Sequential(*layers).double()


def data(n=90, d=5, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)))


def loader(x, batch=32):
    ds = torch.utils.data.TensorDataset(x, torch.zeros(len(x)))
    return torch.utils.data.DataLoader(ds, batch_size=batch)


def activations(model: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each submodule's output computed by hand (copies, before any in-place op)."""
    out, h = {}, x
    with torch.no_grad():
        for name, m in model.named_children():
            h = m(h.clone())
            out[name] = h.clone()
    return out


@pytest.mark.parametrize("debiased", [False, True])
def test_exact_estimator_equals_cka_of_the_collected_activations(debiased):
    a, b, x = mlp(0), mlp(1, (5, 12, 4)), data()
    res = M.compare_layers(a, b, loader(x), estimator="exact", debiased=debiased)
    assert res.layers_a == ["0", "1", "2", "3", "4"] and res.layers_b == ["0", "1", "2"]
    assert res.n_samples == 90 and res.n_batches == 3
    acts_a, acts_b = activations(a, x), activations(b, x)
    for i, la in enumerate(res.layers_a):
        for j, lb in enumerate(res.layers_b):
            expected = M.cka(acts_a[la], acts_b[lb], debiased=debiased)
            assert res.matrix[i, j] == pytest.approx(expected, abs=1e-10), (la, lb)


def test_minibatch_estimator_equals_the_accumulator_over_the_same_batches():
    a, b, x = mlp(0), mlp(1, (5, 12, 4)), data()
    res = M.compare_layers(a, b, loader(x, 25), ["0", "2"], ["2"])
    acts_a, acts_b = activations(a, x), activations(b, x)
    for i, la in enumerate(["0", "2"]):
        acc = M.CKAAccumulator("minibatch")
        for s in range(0, 90, 25):
            acc.update(acts_a[la][s:s + 25], acts_b["2"][s:s + 25])
        assert res.matrix[i, 0] == pytest.approx(acc.compute(), abs=1e-10)
    assert res.estimator == "minibatch" and res.debiased and res.skipped_samples == 0


def test_a_model_against_itself_runs_once_and_is_symmetric():
    a, x = mlp(2), data()
    calls = []
    a.register_forward_pre_hook(lambda m, i: calls.append(1))
    res = M.compare_layers(a, a, loader(x), estimator="exact")
    assert len(calls) == 3  # one forward pass per batch
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.matrix, res.matrix.T, atol=1e-12)


def test_model_state_and_hooks_are_restored_even_after_an_error():
    a, b, x = mlp(0), mlp(1), data()
    a.train()
    a[1].eval()  # a submodule in a different mode from its parent
    b.eval()
    M.compare_layers(a, b, loader(x))
    assert a.training and not a[1].training and a[0].training and not b.training
    assert all(not m._forward_hooks for m in (*a.modules(), *b.modules()))

    def broken(model, batch):
        raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError, match="user code failed"):
        M.compare_layers(a, b, loader(x), forward=broken)
    assert a.training and all(not m._forward_hooks for m in a.modules())


class Tupled(nn.Module):
    """An LSTM (tuple output) and a keyword-argument forward."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, tokens):
        out, _ = self.rnn(tokens)
        return self.head(out[:, -1])


def test_tuple_outputs_mapping_batches_and_sequence_features():
    torch.manual_seed(0)
    model = Tupled().double()
    x = torch.randn(40, 6, 3, dtype=torch.float64)
    batches = [{"tokens": x[s:s + 10]} for s in range(0, 40, 10)]
    res = M.compare_layers(model, model, batches, estimator="exact")
    assert res.layers_a == ["rnn", "head"]
    with torch.no_grad():
        seq = model.rnn(x)[0].reshape(40, -1)  # (samples, time * features)
        head = model(x)
    assert res.matrix[0, 1] == pytest.approx(M.cka(seq, head), abs=1e-10)


def test_forward_and_max_batches():
    a, x = mlp(3), data()
    seen = []

    def forward(model, batch):
        seen.append(len(batch))
        return model(batch * 2.0)

    res = M.compare_layers(a, a, [x[:30], x[30:60], x[60:]], ["0"], ["2"], forward=forward,
                           max_batches=2, estimator="exact")
    assert seen == [30, 30] and res.n_samples == 60
    acts = activations(a, 2.0 * x[:60])
    assert res.matrix[0, 0] == pytest.approx(M.cka(acts["0"], acts["2"]), abs=1e-10)


def test_small_last_batches_are_skipped_by_the_minibatch_estimator():
    a, x = mlp(4), data(67)
    res = M.compare_layers(a, a, loader(x, 32))  # batches of 32, 32, 3
    assert res.skipped_samples == 3 and res.n_samples == 64 and res.n_batches == 3
    with pytest.raises(RelrepsError, match="no batch of at least 4 samples"):
        M.compare_layers(a, a, loader(x[:6], 3))


def test_errors_are_named():
    a, x = mlp(5), data()
    batches = [x[:30], x[30:]]
    with pytest.raises(InputTypeError, match="model_a must be a torch.nn.Module"):
        M.compare_layers(lambda t: t, a, batches)
    with pytest.raises(InputTypeError, match="loader must be"):
        M.compare_layers(a, a, x)
    with pytest.raises(InputTypeError, match="loader must be"):
        M.compare_layers(a, a, 3)
    with pytest.raises(RelrepsError, match="has no module named 'fc9'"):
        M.compare_layers(a, a, batches, ["fc9"])
    with pytest.raises(InputTypeError, match="module names are strings"):
        M.compare_layers(a, a, batches, [0])
    with pytest.raises(RelrepsError, match="names '0' twice"):
        M.compare_layers(a, a, batches, ["0", "0"])
    with pytest.raises(RelrepsError, match="layers_b is empty"):
        M.compare_layers(a, a, batches, None, [])
    with pytest.raises(RelrepsError, match="estimator must be one of"):
        M.compare_layers(a, a, batches, estimator="fast")
    with pytest.raises(RelrepsError, match="debiased=True"):
        M.compare_layers(a, a, batches, debiased=False)
    with pytest.raises(RelrepsError, match="max_batches must be >= 1"):
        M.compare_layers(a, a, batches, max_batches=0)
    with pytest.raises(InputTypeError, match="forward must be callable"):
        M.compare_layers(a, a, batches, forward=3)
    with pytest.raises(RelrepsError, match="loader yielded no batches"):
        M.compare_layers(a, a, [])
    with pytest.raises(InputTypeError, match="cannot feed a batch of type str"):
        M.compare_layers(a, a, ["text"])


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)
        self.conv = nn.Conv1d(1, 2, 3)

    def forward(self, x):
        return self.shared(self.shared(x))


class SequenceFirst(nn.Module):
    """A sequence-first LSTM inside a batch-first model: its output's first dim is time."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        out, _ = self.rnn(x.transpose(0, 1))
        return self.head(out[-1])


def test_layers_that_cannot_be_compared():
    model = Twice().double()
    x = data(20, 4)
    with pytest.raises(RelrepsError, match="ran more than once"):
        M.compare_layers(model, model, [x], ["shared"], ["shared"])
    with pytest.raises(RelrepsError, match=r"\['model_a.unused'\] produced no output"):
        M.compare_layers(model, model, [x], ["unused"], ["unused"])
    seq_first = SequenceFirst().double()
    with pytest.raises(ShapeError, match="disagree on the number of samples"):
        M.compare_layers(seq_first, seq_first, [x.reshape(4, 5, 4)], ["rnn"], ["head"])
    constant = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).double()
    with torch.no_grad():
        constant[0].bias.fill_(-100.0)  # the Linear output varies, the ReLU output is all 0
    with pytest.raises(RelrepsError, match=r"undefined for \['model_a.1'\]"):
        M.compare_layers(constant, constant, [x], ["1"], ["0"], estimator="exact")


@pytest.mark.parametrize("estimator", ["minibatch", "exact"])
def test_non_finite_activations_are_named(estimator):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).double()
    x = data(20, 4)
    x[7, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"model_a.0"):
        M.compare_layers(model, model, [x], estimator=estimator)


def test_exact_estimator_refuses_layers_too_wide(monkeypatch):
    a, x = mlp(6), data()
    monkeypatch.setattr(M, "_EXACT_MAX_ELEMENTS", 100)
    with pytest.raises(RelrepsError, match="estimator='minibatch'"):
        M.compare_layers(a, a, [x], estimator="exact")


def test_heatmap_draws_into_the_callers_axes_without_touching_the_backend(monkeypatch):
    a, b, x = mlp(0), mlp(1, (5, 12, 4)), data()
    res = M.compare_layers(a, b, loader(x))

    def refuse(*args, **kwargs):
        raise AssertionError("matplotlib.use called")

    monkeypatch.setattr(matplotlib, "use", refuse)
    fig = Figure()
    ax = fig.add_subplot()
    assert res.heatmap(ax=ax) is ax
    np.testing.assert_allclose(ax.images[0].get_array(), res.matrix)
    assert [t.get_text() for t in ax.get_xticklabels()] == res.layers_b
    assert len(ax.texts) == res.matrix.size  # annotated: at most 12 x 12
    assert len(fig.axes) == 2  # the axes and its colour bar
    ax2 = Figure().add_subplot()
    res.heatmap(ax=ax2, annotate=False, colorbar=False, title="t")
    assert not ax2.texts and ax2.get_title() == "t"
    with pytest.raises(InputTypeError, match="ax must be matplotlib Axes"):
        res.heatmap(ax="axes")
    json.dumps(res.to_dict())
    assert res.to_dict()["matrix"] == res.matrix.tolist()


def test_heatmap_without_axes_uses_pyplot():
    import matplotlib.pyplot as plt

    res = M.compare_layers(mlp(0), mlp(0), loader(data()))
    ax = res.heatmap()
    try:
        assert ax.images
    finally:
        plt.close(ax.figure)

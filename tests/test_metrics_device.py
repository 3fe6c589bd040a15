"""Device safety: the metrics compute where the input lives and only move final scalars.

Without a GPU, three checks stand in: (1) the computations run end to end on the ``meta``
device (shapes only: any tensor made without ``device=`` on the CPU would make them fail), (2)
no code path calls ``Tensor.numpy()`` (patched to raise), (3) the source builds no tensor
without a device. CUDA tests run where a GPU is present.
"""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch

import metrics_reference as R
from relreps import metrics as M
from relreps.errors import InputTypeError

pytestmark = pytest.mark.usefixtures("one_thread")


def meta(*shape):
    return torch.empty(*shape, device="meta")


INTERNALS = {
    "mean_cosine": lambda: M._mean_cosine_terms(meta(50, 8), meta(50, 8)),
    "linear_feature": lambda: M._linear_terms(meta(50, 8), meta(50, 5), False),
    "linear_feature_debiased": lambda: M._linear_terms(meta(50, 8), meta(50, 5), True),
    "linear_gram": lambda: M._linear_terms(meta(6, 40), meta(6, 30), False, route="gram"),
    "linear_gram_debiased": lambda: M._linear_terms(meta(6, 40), meta(6, 30), True),
    "rbf_median": lambda: M._rbf_terms(meta(20, 4), meta(20, 3), True, None),
    "rbf_sigma": lambda: M._rbf_terms(meta(20, 4), meta(20, 3), False, 2.0),
    "procrustes": lambda: M._procrustes_terms(meta(50, 8), meta(50, 5)),
    "procrustes_qr": lambda: M._procrustes_terms(meta(6, 40), meta(6, 30)),
    **{f"rsa_{m}_{k}": (lambda m=m, k=k: M._rsa_terms(meta(30, 4), meta(30, 6), m, k))
       for m in ("correlation", "cosine", "euclidean") for k in ("spearman", "pearson")},
    "accumulator_exact": lambda: M.CKAAccumulator(debiased=True)
    .update(meta(20, 4), meta(20, 3)).update(meta(7, 4), meta(7, 3))._terms(),
    "accumulator_minibatch": lambda: M.CKAAccumulator("minibatch")
    .update(meta(20, 4), meta(20, 3)).update(meta(7, 4), meta(7, 3))._terms(),
}


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_computations_stay_on_the_input_device(name):
    out = INTERNALS[name]()
    out = out if isinstance(out, tuple) else (out,)
    assert all(t.device.type == "meta" for t in out)


def test_public_functions_refuse_meta_tensors_with_a_named_error():
    x, y = meta(10, 3), meta(10, 3)
    for fn in (M.mean_cosine, M.cka, M.svcca, M.pwcca, M.procrustes_distance, M.rsa):
        with pytest.raises(InputTypeError, match="meta tensor"):
            fn(x, y)
    acc = M.CKAAccumulator().update(x, y)
    with pytest.raises(InputTypeError, match="no values"):
        acc.compute()


def test_inputs_on_different_devices_or_kinds_are_refused():
    x, y = R.correlated_pair(0, 10, 3, 3)
    for fn in (M.mean_cosine, M.cka, M.svcca, M.pwcca, M.procrustes_distance, M.rsa):
        with pytest.raises(InputTypeError, match="different devices"):
            fn(torch.tensor(x), meta(10, 3))
        with pytest.raises(InputTypeError, match="mixed numpy and torch"):
            fn(x, torch.tensor(y))


def test_no_tensor_is_converted_with_numpy(monkeypatch):
    x, y = R.correlated_pair(1, 40, 6, 4)
    expected = {"cka": M.cka(x, y, debiased=True), "svcca": M.svcca(x, y, keep=3),
                "pwcca": M.pwcca(x, y), "procrustes": M.procrustes_distance(x, y),
                "rsa": M.rsa(x, y), "rbf": M.cka(x, y, kernel="rbf"),
                "mean_cosine": M.mean_cosine(x[:, :4], y)}

    def refuse(self, *args, **kwargs):
        raise AssertionError("Tensor.numpy() called: it fails for tensors on a GPU")

    monkeypatch.setattr(torch.Tensor, "numpy", refuse)
    tx = torch.tensor(x, requires_grad=True)  # an autograd graph is detached, not an error
    ty = torch.tensor(y)
    got = {"cka": M.cka(tx, ty, debiased=True), "svcca": M.svcca(tx, ty, keep=3),
           "pwcca": M.pwcca(tx, ty), "procrustes": M.procrustes_distance(tx, ty),
           "rsa": M.rsa(tx, ty), "rbf": M.cka(tx, ty, kernel="rbf"),
           "mean_cosine": M.mean_cosine(tx[:, :4], ty)}
    for k, v in got.items():
        assert type(v) is float
        assert v == pytest.approx(expected[k], abs=1e-12), k
    acc = M.CKAAccumulator().update(tx[:20], ty[:20]).update(tx[20:], ty[20:])
    assert acc.compute() == pytest.approx(M.cka(x, y), abs=1e-12)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU()).double()
    res = M.compare_layers(model, model, [torch.tensor(x[:20]), torch.tensor(x[20:])],
                           estimator="exact")
    assert res.matrix.shape == (2, 2)


def _my_source_tree() -> list[ast.AST]:
    """The AST nodes of relreps.metrics (the neighbourhood metrics live in relreps.neighbors,
    which metrics only re-exports)."""
    return list(ast.walk(ast.parse(inspect.getsource(M))))


FACTORIES = {"eye", "zeros", "ones", "empty", "full", "arange", "linspace", "tensor",
             "as_tensor", "rand", "randn", "randint", "randperm"}


def test_source_never_calls_numpy_on_tensors_and_builds_tensors_on_a_device():
    calls = [n for n in _my_source_tree() if isinstance(n, ast.Call)]
    assert calls
    for node in calls:
        f = node.func
        if not isinstance(f, ast.Attribute):
            continue
        assert f.attr != "numpy", f"line {node.lineno}: .numpy()"
        if isinstance(f.value, ast.Name) and f.value.id == "torch" and f.attr in FACTORIES:
            kws = {k.arg for k in node.keywords}
            assert "device" in kws, f"line {node.lineno}: torch.{f.attr} without device="


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_results_equal_cpu_results():  # pragma: no cover - runs where a GPU is present
    x, y = R.correlated_pair(2, 300, 12, 7)
    tx, ty = torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda")
    for fn, kw in ((M.cka, {}), (M.cka, {"debiased": True}), (M.cka, {"kernel": "rbf"}),
                   (M.svcca, {}), (M.pwcca, {}), (M.procrustes_distance, {}), (M.rsa, {})):
        assert fn(tx, ty, **kw) == pytest.approx(fn(x, y, **kw), abs=1e-9)
    assert M.mean_cosine(tx[:, :7], ty) == pytest.approx(M.mean_cosine(x[:, :7], y), abs=1e-12)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.Tanh()).double().cuda()
    res = M.compare_layers(model, model, [tx[:150], tx[150:]])
    cpu = M.compare_layers(model.cpu(), model.cpu(), [torch.tensor(x[:150]),
                                                      torch.tensor(x[150:])])
    np.testing.assert_allclose(res.matrix, cpu.matrix, atol=1e-9)

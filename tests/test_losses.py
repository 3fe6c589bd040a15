"""Relative-similarity losses and relative distillation."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, ShapeError
from relreps.losses import (
    RelativeSimilarityLoss,
    distill_relative,
    distillation_demo,
    mlp_encoder,
    relative_alignment_loss,
)
from relreps.projection import relative_projection


@pytest.mark.parametrize("kind", ["mse", "cosine", "kl"])
def test_zero_on_agreement_positive_otherwise(kind):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 5, generator=g)
    assert float(relative_alignment_loss(t.clone(), t, kind)) == pytest.approx(0, abs=1e-6)
    assert float(relative_alignment_loss(torch.randn(8, 5, generator=g), t, kind)) > 0.05


def test_mse_and_cosine_ignore_row_offset_and_scale():
    t = torch.randn(6, 4)
    for kind in ("mse", "cosine"):
        assert float(relative_alignment_loss(3 * t + 2, t, kind)) == pytest.approx(0, abs=1e-5)


def test_loss_is_invariant_to_rotating_the_student_and_has_gradients():
    rng = np.random.default_rng(0)
    z, a = rng.normal(size=(10, 4)), rng.normal(size=(6, 4))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    teacher = torch.tensor(relative_projection(z, a))
    loss = RelativeSimilarityLoss()
    zt = torch.tensor(z @ q, requires_grad=True)
    val = loss(zt, torch.tensor(a @ q), teacher)
    assert float(val.detach()) == pytest.approx(0, abs=1e-10)
    other = torch.tensor(rng.normal(size=(10, 4)), requires_grad=True)
    val = loss(other, torch.tensor(a), teacher)
    val.backward()
    assert float(val.detach()) > 0 and other.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(RelrepsError):
        relative_alignment_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(RelrepsError):
        relative_alignment_loss(torch.zeros(2, 3), torch.zeros(2, 3), "l1")
    with pytest.raises(RelrepsError):
        distill_relative(mlp_encoder(3, 2), np.zeros((4, 3)), np.zeros((5, 2)), np.zeros((2, 3)))


def test_distillation_reduces_the_loss_and_transfers_the_head():
    """A student trained only to match a teacher's relative space inherits its classifier."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=500, n_features=10, n_informative=6, n_classes=3,
                               n_clusters_per_class=1, random_state=0)
    x = x.astype(np.float32)
    teacher = mlp_encoder(10, 8, seed=0)  # a fixed random teacher: its geometry is the target
    with torch.no_grad():
        z = teacher(torch.tensor(x)).numpy()
    idx = np.arange(0, 400, 10)
    out = distillation_demo(x[:400], y[:400], x[400:], y[400:], z[:400], z[400:],
                            anchor_idx=idx, student_dim=12, epochs=40, seed=0)
    hist = out["loss_history"]
    assert hist[-1] < 0.5 * hist[0]
    assert out["student_stitched_accuracy"] > out["untrained_stitched_accuracy"] + 0.05
    assert out["student_stitched_accuracy"] > out["teacher_accuracy"] - 0.1


def test_inputs_are_validated_with_named_errors():
    t = torch.randn(4, 3)
    with pytest.raises(InputTypeError, match="torch tensor"):
        relative_alignment_loss(t.numpy(), t)
    with pytest.raises(ShapeError):
        relative_alignment_loss(t, torch.randn(4, 5))
    with pytest.raises(RelrepsError, match="temperature"):
        relative_alignment_loss(t, t, "kl", temperature=0.0)
    with pytest.raises(NonFiniteError):
        relative_alignment_loss(t, torch.full((4, 3), float("nan")))
    with pytest.raises(RelrepsError, match="unknown similarity"):
        RelativeSimilarityLoss(similarity="cosyne")
    with pytest.raises(RelrepsError, match="center"):
        RelativeSimilarityLoss(center="auto")
    student = mlp_encoder(3, 2)
    with pytest.raises(InputTypeError, match="nn.Module"):
        distill_relative(lambda v: v, np.zeros((4, 3)), np.zeros((4, 2)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="features"):
        distill_relative(student, np.zeros((4, 3)), np.zeros((4, 2)), np.zeros((2, 5)))
    for bad in ({"epochs": 2.5}, {"batch_size": 0}, {"lr": -1.0}, {"seed": True}):
        with pytest.raises(RelrepsError):
            distill_relative(student, np.ones((4, 3)), np.ones((4, 2)), np.ones((2, 3)), **bad)
    with pytest.raises(InputTypeError, match="latent_dim"):
        mlp_encoder(3, "2")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-2, 1e3), shift=st.floats(-50, 50),
       kind=st.sampled_from(["mse", "cosine"]))
@example(seed=0, scale=1e-2, shift=50.0, kind="mse")  # small spread on a large offset
@example(seed=1, scale=1e-2, shift=-50.0, kind="mse")
def test_mse_and_cosine_are_invariant_to_positive_row_affine_maps(seed, scale, shift, kind):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(6, 5, generator=g, dtype=torch.float64)
    student = torch.randn(6, 5, generator=g, dtype=torch.float64)
    base = float(relative_alignment_loss(student, teacher, kind))
    moved = float(relative_alignment_loss(scale * student + shift, teacher, kind))
    # eps=1e-8 is relative to the centred row's spread, so only float64 rounding remains
    assert moved == pytest.approx(base, rel=1e-6, abs=1e-9)
    assert float(relative_alignment_loss(-student, teacher, kind)) != pytest.approx(base)


def test_distillation_accepts_tensors_and_keeps_the_global_rng():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    teacher = mlp_encoder(3, 4, seed=0)
    with torch.no_grad():
        t_rel = relative_projection(teacher(x), teacher(x[:5]))
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    hist = distill_relative(mlp_encoder(3, 2, seed=1), x, t_rel, x[:5], epochs=3, seed=0)
    assert len(hist) == 3 and all(np.isfinite(hist))
    assert torch.equal(torch.rand(1), expected)

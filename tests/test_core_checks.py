"""check_invariances agrees with every declaration; small named-error paths of the core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relreps import similarity
from relreps.errors import AnchorError, RelrepsError
from relreps.metrics import knn_indices
from relreps.nn import TorchClassifier
from relreps.stitching import stitching_matrix


@pytest.mark.parametrize("name", similarity.available())
@pytest.mark.parametrize("center", [None, "anchors"])
def test_empirical_invariances_match_declared(name, center):
    found = {k for k, ok in similarity.check_invariances(name, center=center).items() if ok}
    assert found == set(similarity.invariances(name, center))


def test_check_invariances_catches_a_false_declaration():
    def sq(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x, a).square()

    similarity.register("_test_sq_false", sq, invariances={"isotropic_scaling"}, overwrite=True)
    try:
        found = similarity.check_invariances("_test_sq_false")
    finally:
        similarity._REGISTRY.pop("_test_sq_false")  # keep the registry as the docs list it
    assert found["isotropic_scaling"] is False  # declared, but does not hold
    assert found["translation"] and found["orthogonal"]  # holds, but undeclared


def test_random_transform_rejects_unknown_class():
    with pytest.raises(RelrepsError, match="unknown invariance class"):
        similarity.random_transform("shear", 3, torch.Generator())


def test_knn_exclude_out_of_range_is_named():
    x = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(RelrepsError, match="exclude must hold"):
        knn_indices(x, x, 2, exclude=np.full(10, 10))


def test_stitching_unknown_fit_space_and_negative_anchor_index():
    rng = np.random.default_rng(0)
    spaces = {"a": (rng.standard_normal((20, 4)), rng.standard_normal((5, 4)))}
    y = np.arange(20) % 2
    with pytest.raises(RelrepsError, match="fit_spaces"):
        stitching_matrix(spaces, y, y[:5], anchors=np.arange(4), fit_spaces=["b"])
    with pytest.raises(AnchorError, match="anchor index -1 out of range"):
        stitching_matrix(spaces, y, y[:5], anchors=np.array([0, -1]))


def test_torch_classifier_without_seed_still_learns():
    rng = np.random.default_rng(0)
    # class signal on one coordinate (the head's LayerNorm removes a common offset of all features)
    x = rng.normal(0, 1, (80, 8))
    y = np.r_[np.zeros(40), np.ones(40)]
    x[:, 0] += 3 * (2 * y - 1)
    clf = TorchClassifier(random_state=None, epochs=100, lr=1e-2, batch_size=16).fit(x, y)
    assert (clf.predict(x) == y).mean() > 0.9

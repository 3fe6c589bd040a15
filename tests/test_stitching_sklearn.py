"""scikit-learn's estimator contract for the stitching classifiers (every check, none skipped)."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from relreps.stitching import CVLogisticRegression, StitchedClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


@parametrize_with_checks([StitchedClassifier(), StitchedClassifier(head="logreg"),
                          CVLogisticRegression(Cs=(0.1, 1.0, 10.0), cv=3)])
def test_sklearn_contract(estimator, check):
    check(estimator)

"""The thread policy of small problems (relreps._threads) and where it applies."""

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from relreps._threads import SMALL_PROBLEM_ELEMENTS, threads_for


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_small_problems_run_on_one_thread_and_large_ones_keep_the_setting():
    with threadpool_limits(limits=2):
        before = _blas_threads()
        with threads_for(SMALL_PROBLEM_ELEMENTS):
            assert _blas_threads() == {1}
        assert _blas_threads() == before  # restored on exit
        with threads_for(SMALL_PROBLEM_ELEMENTS + 1):
            assert _blas_threads() == before


def test_cv_head_fits_on_one_thread_and_gives_the_same_model(monkeypatch):
    import relreps.stitching as st

    seen = []
    real = st.CVLogisticRegression._path

    def spy(self, *a, **k):
        seen.append(_blas_threads())
        return real(self, *a, **k)

    monkeypatch.setattr(st.CVLogisticRegression, "_path", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    with threadpool_limits(limits=2):
        before = _blas_threads()
        m = st.CVLogisticRegression().fit(X, y)
        assert _blas_threads() == before  # the caller's setting is back
    assert seen and seen[0] == {1}
    with threadpool_limits(limits=1):
        ref = st.CVLogisticRegression().fit(X, y)
    assert m.C_ == ref.C_
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-6, atol=1e-8)

"""Embedding files written for the user follow the umask, like the run folder's files."""

import os

import numpy as np

from relreps.io import write_array


def test_written_npy_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_array(tmp_path / "emb.npy", np.ones((4, 3), dtype=np.float32))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert np.load(path).shape == (4, 3)

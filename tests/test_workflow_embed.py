"""relreps embed: encoders, .npy/.zarr outputs, resuming, and a worker killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relreps.cli import main
from relreps.errors import FormatError, OptionError, RelrepsError, RunFolderError
from relreps.io import read_array
from relreps.workflow.embed import DONE_DIR, HashingEncoder, embed_texts, resolve_encoder

SRC = str(Path(__file__).resolve().parents[1] / "src")
TEXTS = [f"text number {i} about {'sports' if i % 2 else 'world news'} and more" for i in range(50)]


class FailingEncoder(HashingEncoder):
    """The hashing encoder, failing on texts that contain 'boom' (an interrupted run)."""

    def encode(self, texts, batch_size=64, **kw):
        if any("boom" in t for t in texts):
            raise RuntimeError("encoder crashed")
        return super().encode(texts, batch_size, **kw)


def test_hashing_encoder_is_deterministic_across_processes():
    enc = HashingEncoder(32)
    a = enc.encode(TEXTS[:5])
    assert a.shape == (5, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    assert np.linalg.norm(enc.encode([""])) == pytest.approx(1.0)  # never a zero row
    code = ("import numpy as np, sys; from relreps.workflow.embed import HashingEncoder; "
            f"np.save(sys.argv[1], HashingEncoder(32).encode({TEXTS[:5]!r}))")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"hash-{os.getpid()}.npy"
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONHASHSEED="123")
    subprocess.run([sys.executable, "-c", code, str(out)], env=env, check=True)
    np.testing.assert_array_equal(np.load(out), a)
    out.unlink()
    assert resolve_encoder("hash:32").name == "hash-32"
    with pytest.raises(OptionError, match="hash:256"):
        resolve_encoder("hash:x")
    with pytest.raises(OptionError, match="'name' and 'encode'"):
        resolve_encoder(3)
    with pytest.raises(RelrepsError):
        HashingEncoder(1)


def test_embed_npy(tmp_path):
    out = tmp_path / "e.npy"
    rep = embed_texts(TEXTS, "hash:16", out, partition_size=7)
    x = np.load(out)
    assert x.shape == (50, 16) and rep.n_texts == 50 and rep.dim == 16
    np.testing.assert_array_equal(x, HashingEncoder(16).encode(TEXTS))
    with pytest.raises(RunFolderError, match="exists; pass --force"):
        embed_texts(TEXTS, "hash:16", out)
    embed_texts(TEXTS[:3], "hash:16", out, force=True)
    assert np.load(out).shape == (3, 16)
    with pytest.raises(FormatError, match=".npy or .zarr"):
        embed_texts(TEXTS, "hash:16", tmp_path / "e.csv")
    with pytest.raises(FormatError, match="no texts"):
        embed_texts([], "hash:16", tmp_path / "x.npy")


def test_embed_zarr_resumes_finished_partitions(tmp_path):
    out = tmp_path / "e.zarr"
    texts = list(TEXTS)
    texts[23] = "boom"
    with pytest.raises(RuntimeError, match="encoder crashed"):
        embed_texts(texts, FailingEncoder(16), out, partition_size=5)
    done = sorted(int(p.name) for p in (out / DONE_DIR).iterdir())
    assert done == [0, 1, 2, 3]  # partitions before the failing one (4) were kept
    rep = embed_texts(texts, HashingEncoder(16), out, partition_size=5)
    assert rep.skipped == [0, 1, 2, 3] and rep.computed == list(range(4, 10))
    np.testing.assert_array_equal(read_array(out), HashingEncoder(16).encode(texts))
    assert not (out / DONE_DIR).exists()
    again = embed_texts(texts, HashingEncoder(16), out, partition_size=5)
    assert again.computed == [] and len(again.skipped) == 10
    with pytest.raises(RunFolderError, match="other texts or another encoder"):
        embed_texts(texts[:-1], HashingEncoder(16), out, partition_size=5)
    with pytest.raises(RunFolderError, match="other texts or another encoder"):
        embed_texts(texts, HashingEncoder(8), out, partition_size=5)
    rep = embed_texts(texts[:-1], HashingEncoder(8), out, partition_size=5, force=True)
    assert read_array(out).shape == (49, 8) and rep.skipped == []
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a store written by relreps embed"):
        embed_texts(texts, HashingEncoder(8), other)
    with pytest.raises(RunFolderError, match="refusing to overwrite"):
        embed_texts(texts, HashingEncoder(8), other, force=True)
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_embed_on_a_cluster_survives_a_killed_worker(tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "e.zarr"
    texts = TEXTS * 2  # 100 texts, 20 partitions of 5, ~0.2 s each
    enc = HashingEncoder(16, delay=0.1)
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def log(msg):
            if "done" in msg and not killed and msg.startswith("partition 3/"):
                victim = next(iter(pids.values()))
                os.kill(victim, signal.SIGKILL)  # a worker dies with tasks in flight
                killed.append(victim)

        rep = embed_texts(texts, enc, out, partition_size=5, batch_size=2, client=client,
                          log=log)
    assert killed and len(rep.computed) == 20
    np.testing.assert_array_equal(read_array(out), HashingEncoder(16).encode(texts))
    with pytest.raises(OptionError, match=".zarr"):
        embed_texts(texts, enc, tmp_path / "e.npy", client=object())


def test_cli_embed_then_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("texts.txt").write_text("".join(t + "\n" for t in TEXTS))
    assert main(["embed", "--encoder", "hash:32", "--texts", "texts.txt", "--out", "a.npy"]) == 0
    assert "Wrote a.npy: 50 x 32 embeddings from hash-32" in capsys.readouterr().out
    assert main(["embed", "--encoder", "hash:24", "--texts", "texts.txt", "--out", "b.zarr",
                 "--partition-size", "8"]) == 0
    assert main(["embed", "--encoder", "hash:24", "--texts", "texts.txt", "--out", "b.zarr",
                 "--partition-size", "8"]) == 0
    assert "7 partition(s) were already done" in capsys.readouterr().out
    assert main(["compare", "a.npy", "b.zarr", "--k", "3", "--anchors", "10"]) == 0
    assert Path("runs/compare/results.json").exists()
    capsys.readouterr()
    for args, expected in (
            (["--encoder", "hash:8", "--texts", "texts.txt", "--out", "a.npy"], "--force"),
            (["--encoder", "hash:8", "--texts", "texts.txt", "--out", "c.npy", "--workers",
              "2"], ".zarr store"),
            (["--encoder", "hash:8", "--texts", "missing.txt", "--out", "c.npy"],
             "file not found"),
            (["--encoder", "nope-model", "--texts", "texts.txt", "--out", "c.npy"],
             "unknown text encoder"),
            (["--encoder", "hash:8", "--texts", "texts.txt", "--out", "c.parquet"],
             ".npy or .zarr")):
        assert main(["embed", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (args, err)

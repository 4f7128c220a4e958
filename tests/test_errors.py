"""User errors stop before training with one line naming the key, the value and what is
allowed, and no traceback."""

import pytest

from helpers import train_cli

CASES = [
    # overrides, what the message must say
    (["algorithm=foo"], ["algorithm/foo", "Available options in 'algorithm'", "protonet"]),
    (
        ["dataset=omniglot", "dataset.root=/nonexistent/omniglot"],
        ["dataset.root=/nonexistent/omniglot", "looked in", "dataset.download=true"],
    ),
    (["dataset.ways=1000"], ["dataset.ways=1000", "only 411 classes"]),
    (["dataset.train_ways=900"], ["dataset.train_ways=900", "the train split has only"]),
    (["dataset.shots=10"], ["dataset.shots + dataset.queries=25", "only 20 samples"]),
    (["hardware=gpu"], ["hardware.accelerator=gpu", "no CUDA GPU", "hardware=cpu"]),
    (["steps=0"], ["steps=0", "positive integer"]),
    (["dataset.queries=-1"], ["dataset.queries=-1", "positive integer"]),
    (["algorithm.meta_batch=0"], ["algorithm.meta_batch=0", "positive integer"]),
    (
        ["dataset=sinusoid", "backbone=mlp"],
        ["algorithm=protonet", "classification tasks only", "regression"],
    ),
    (["resume=sometimes"], ["resume=sometimes", "auto, never"]),
    (
        ["hardware=multi_node", "hardware.accelerator=cpu", "hardware.devices=1"],
        ["hardware.num_nodes=2", "launcher=slurm"],
    ),
    (
        ["hardware=ddp_cpu", "algorithm.meta_batch=3"],
        ["algorithm.meta_batch=3", "divide by the number of processes (2)"],
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_user_error_is_one_clear_line(tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("kept")  # nothing already written is lost
    proc = train_cli(run_dir, "logger=none", *overrides, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert (run_dir / "notes.txt").read_text() == "kept"
    assert not (run_dir / "checkpoints").exists()

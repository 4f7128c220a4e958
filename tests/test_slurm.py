"""launcher=slurm against a real one-node SLURM cluster (tests/slurm_cluster.py): a job array
whose jobs each run two-process DDP under srun in one run folder, and a job that SLURM's warning
signal preempts: it saves a checkpoint, requeues itself and resumes into the same run. The bad
settings that launcher=slurm refuses before submitting anything are checked without a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT, TINY, compose, run_cli, train_cli
from metalab.errors import ConfigError
from metalab.run.launch import check_slurm
from slurm_cluster import PARTITION, slurm_cluster  # noqa: F401  (a fixture)

# The local node may have only 2 CPUs: a two-task job takes both, one CPU per task.
SUBMIT = [
    "launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
# Long enough that the warning signal, sent after the first checkpoint, finds training running.
PREEMPTED = [
    "steps=9",
    "val_every=3",
    "val_episodes=6",
    "test_episodes=10",
    "eval_batch=5",
    "log_every=1",
]
TIMEOUT = 600  # s: a guard against a hung job, not a speed check


class Sweep:
    """A `metalab-train -m launcher=slurm ...` running in the background, and its jobs."""

    def __init__(self, sweep_dir: Path, env: dict, *overrides: str):
        self.dir, self.env = sweep_dir, {**os.environ, **env}
        self.log = sweep_dir.with_suffix(".log")
        cmd = [
            sys.executable,
            "-m",
            "metalab.run.train",
            "-m",
            *SUBMIT,
            f"hydra.sweep.dir={sweep_dir}",
            *overrides,
        ]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, "WANDB_MODE": "offline"},
            )

    def jobs(self) -> list[str]:
        """SLURM ids of the jobs in job order: <array id>_<index>, or <id> for a single job."""
        found = [
            p.name
            for p in (self.dir / ".submitit").iterdir()
            if (p / f"{p.name}_submitted.pkl").is_file()
        ]
        return sorted(found, key=lambda job: int(job.partition("_")[2] or 0))

    def job_log(self, job: str) -> str:
        files = sorted((self.dir / ".submitit" / job).glob("*_log.*"))
        return "".join(path.read_text() for path in files)

    def slurm(self, *cmd: str) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def wait(self) -> None:
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not end in {TIMEOUT} s; see {self.log}")
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            for job in self.jobs():
                subprocess.run(["scancel", job], env=self.env, timeout=60)


def wait_until(done, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {TIMEOUT} s")
        time.sleep(0.1)


def send_warning_signal(sweep: Sweep) -> str:
    """What SLURM does signal_delay_s before a job's time limit: SIGUSR1 to the job's tasks
    (`--signal=USR1@<s>` without B: skips the batch shell, as does scancel --signal)."""
    wait_until(
        lambda: (sweep.dir / "0" / "checkpoints" / "last.ckpt").is_file(),
        "first checkpoint of the job to preempt",
    )
    (job,) = sweep.jobs()
    sweep.slurm("scancel", "--signal=USR1", job)
    return job


@pytest.fixture(scope="module")
def sweeps(slurm_cluster, tmp_path_factory):  # noqa: F811  (the imported fixture)
    """Both sweeps share the node: the preempted job first, then the DDP jobs (2 CPUs each)."""
    root = tmp_path_factory.mktemp("slurm")
    # one thread, as the uninterrupted run it is compared with bit for bit
    preempted = Sweep(
        root / "preempted", {**slurm_cluster, "OMP_NUM_THREADS": "1"}, "hardware=cpu", *PREEMPTED
    )
    ddp = Sweep(
        root / "ddp",
        slurm_cluster,
        "hardware=ddp_cpu",
        "algorithm.meta_batch=2",
        "seed=0,1",
        "logger=csv",
        *TINY,
    )
    try:
        send_warning_signal(preempted)
        yield preempted, ddp
    finally:
        preempted.stop()
        ddp.stop()


def global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def test_job_array_runs_ddp_under_srun_in_one_folder_per_job(sweeps):
    _, sweep = sweeps
    sweep.wait()
    jobs = sweep.jobs()
    assert len(jobs) == 2
    assert sorted(p.name for p in sweep.dir.glob("[!.]*") if p.is_dir()) == ["0", "1"]
    for index, job in enumerate(jobs):
        results = json.loads((sweep.dir / str(index) / "results.json").read_text())
        assert results["test/episodes"] == 10
        # srun started two tasks, and Lightning joined them (no ranks of our own on top)
        logs = {p.name for p in (sweep.dir / ".submitit" / job).glob("*_log.out")}
        assert logs == {f"{job}_0_log.out", f"{job}_1_log.out"}
        log = sweep.job_log(job)
        assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log


def test_warning_signal_saves_requeues_and_resumes_the_same_run(sweeps, tmp_path):
    """... and ends where an uninterrupted run of the same config ends (this machine, one
    thread, as the job's one CPU)."""
    sweep, _ = sweeps
    whole = train_cli(tmp_path, "hardware=cpu", *PREEMPTED, env={"OMP_NUM_THREADS": "1"})
    assert whole.returncode == 0, whole.stderr[-3000:]
    sweep.wait()
    (job,) = sweep.jobs()
    run, log = sweep.dir / "0", sweep.job_log(job)
    # Lightning took the signal and requeued the job; submitit's own handler stayed out of it
    assert "Handling auto-requeue signal" in log and f"Requeued SLURM job: {job}" in log
    assert "Calling checkpoint method" not in log
    # the requeued start left no result behind: only the resumed one ended the job
    assert log.count("[submitit][INFO] - Job completed successfully") == 1
    assert "Restarts=1" in sweep.slurm("scontrol", "show", "job", job)
    hpc = run / "hpc_ckpt_1.ckpt"
    assert f"Restoring states from the checkpoint path at {hpc}" in log
    assert 3 <= global_step(hpc) < 9
    assert global_step(run / "checkpoints" / "last.ckpt") == 9
    assert json.loads((run / "results.json").read_text())["test/episodes"] == 10
    requeued = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    uninterrupted = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    for name, value in uninterrupted["state_dict"].items():
        assert torch.equal(requeued[name], value), name
    tested = [json.loads((d / "results.json").read_text()) for d in (run, tmp_path)]
    assert [{k: v for k, v in r.items() if k.startswith("test/")} for r in tested] == [
        {k: v for k, v in tested[1].items() if k.startswith("test/")}
    ] * 2
    # one W&B run: one id, an offline segment per start of the job
    run_id = (run / "wandb_id.txt").read_text().strip()
    segments = list((run / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)


def test_slurm_local_takes_the_submitit_path_without_a_cluster(tmp_path):
    """launcher=slurm_local: one process per job, which starts the extra DDP rank itself."""
    proc = run_cli(
        "run.train",
        "-m",
        "launcher=slurm_local",
        f"hydra.sweep.dir={tmp_path}",
        "hardware=ddp_cpu",
        "algorithm.meta_batch=2",
        "logger=csv",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "0" / "results.json").read_text())["test/episodes"] == 10
    (log,) = (tmp_path / ".submitit").glob("*/*_0_log.out")
    assert "Starting with 2 processes" in log.read_text()


def slurm_config(*overrides: str):
    return compose(["launcher=slurm", *overrides], hydra=True)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["hardware=multi_gpu", "hardware.devices=-1"], "hardware.devices"),
        (["hardware=ddp_cpu", "hydra.launcher.tasks_per_node=1"], "hydra.launcher.tasks_per_node"),
        (["hardware=multi_node", "hydra.launcher.nodes=1"], "hydra.launcher.nodes"),
        (["hardware=gpu", "hydra.launcher.gpus_per_node=0"], "hydra.launcher.gpus_per_node"),
    ],
)
def test_resources_that_do_not_match_the_hardware_are_refused(overrides, key):
    with pytest.raises(ConfigError) as err:
        check_slurm(slurm_config(*overrides))
    assert err.value.key == key


def refused(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    """Runs metalab-train, expects the one-line refusal before anything is submitted or run."""
    proc = run_cli(
        "run.train",
        *args,
        f"hydra.sweep.dir={tmp_path}/sweep",
        f"hydra.run.dir={tmp_path}/run",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "run").exists()
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("metalab-train: error:")]
    return line


def test_sweeping_the_hardware_is_refused(tmp_path):
    line = refused(tmp_path, "-m", "launcher=slurm", "hardware=cpu,ddp_cpu")
    assert line.startswith("metalab-train: error: hardware=cpu,ddp_cpu: ")


def test_missing_sbatch_is_refused(tmp_path):
    line = refused(tmp_path, "-m", "launcher=slurm", env={"PATH": str(tmp_path)})
    assert "launcher=slurm: sbatch is not on PATH" in line


def test_slurm_without_multirun_is_refused(tmp_path):
    line = refused(tmp_path, "launcher=slurm")
    assert "launcher=slurm: submits multiruns only: add -m" in line

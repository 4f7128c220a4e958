"""Meta-training throughput of second-order MAML: metalab's pipeline against learn2learn.

Workload: conv4 (64 channels) on 28x28 glyphs images, 5-way 1-shot, 15 queries per class,
one inner SGD step, meta-batch 32 (``--meta-batch``). Benchmarks, all in this one process:

* ``pipeline/<engine>``: metalab as a user runs it (Hydra config, ``metalab.run.training``'s data
  module, model, loggers and Lightning trainer with its progress bar); one per ``--engines``;
* ``learn2learn``: learn2learn's own recipe (examples/vision/maml_omniglot.py): Taskset
  pipeline over the same images, ``MAML.clone()/.adapt()`` per task, Adam outer step;
* ``floor``: the same math in a plain loop over one fixed, pre-made batch on the device.

A step is timed from the end of one outer step to the end of the next (so data sampling,
logging and the progress bar of the pipelines count), after ``--warmup`` steps; the device is
synchronised before each clock read. The last line is
``speedup_vs_learn2learn=<x> overhead_vs_floor=<y>`` for the ``auto`` engine, then one figure per
goal of the speed issue (``n/a``: not measured in this run; benchmarks/goals.py):
``gpu_tasks_per_s`` (pipeline/auto on CUDA), ``cpu_step_vs_loop`` (pipeline/auto's step time over
the floor's, CPU), ``mem_per_task_ckpt_vs_plain`` and ``ckpt_step_vs_plain`` (``--memory``),
``protonet_vs_bare`` (``--protonet``). The table names the device and gives the achieved
GFLOP/s of the MAML rows (torch.utils.flop_counter).

usage (repo root): PYTHONPATH=src python benchmarks/throughput.py --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import goals
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
WAYS, SHOTS, QUERIES = 5, 1, 15
INNER_LR, OUTER_LR = 0.4, 1e-3  # conf/algorithm/maml.yaml; the same for every benchmark
ENGINES = ("loop", "fused", "vmap", "learn2learn", "auto")
DEFAULTS = {"cpu": {"steps": 5, "warmup": 1}, "cuda": {"steps": 30, "warmup": 5}}


def import_metalab() -> None:
    """The GPU machine runs from a checkout where metalab is not installed."""
    try:
        import metalab  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))


def importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# -- measuring ----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Memory:
    """Peak memory of a region. CUDA: max_memory_allocated after a reset (absolute, MiB).
    CPU: peak RSS growth over the region's start. Linux lets us reset the peak (VmHWM) through
    /proc/self/clear_refs, which is exact; psutil only reads the current RSS, so elsewhere the
    fallback is ru_maxrss growth, a lower bound (0 when an earlier region peaked higher)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.label = "CUDA max_memory_allocated" if device.type == "cuda" else _cpu_method()
        self.base = 0.0

    def start(self) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.label.startswith("VmHWM"):
            _malloc_trim()  # hand freed heap back first, or reused cache hides the growth
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = _proc_status_mib("VmRSS")
        else:
            self.base = _ru_maxrss_mib()

    def peak_mib(self) -> float:
        sync(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.label.startswith("VmHWM"):
            return _proc_status_mib("VmHWM") - self.base
        return _ru_maxrss_mib() - self.base


def _cpu_method() -> str:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_mib("VmHWM")
        return "VmHWM (peak RSS) growth over the timed steps, CPU"
    except (OSError, KeyError):
        return "ru_maxrss growth over the timed steps, CPU (lower bound: process-wide peak)"


def _malloc_trim() -> None:
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _proc_status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _ru_maxrss_mib() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, else kB


class Clock:
    """End-of-step timestamps; a step's time is the gap to the previous step's end."""

    def __init__(self, device: torch.device, warmup: int, memory: Memory):
        self.device, self.warmup, self.memory = device, warmup, memory
        self.ends: list[float] = []
        self.inside: list[float] = []  # start -> end of a step, where a framework reports it
        self.started = 0.0
        self.peak = math.nan

    def step_start(self) -> None:
        sync(self.device)
        self.started = time.perf_counter()

    def step_end(self) -> None:
        sync(self.device)  # CUDA work is asynchronous: wait for it before reading the clock
        now = time.perf_counter()
        if self.started:
            self.inside.append(now - self.started)
        self.ends.append(now)
        if len(self.ends) == self.warmup:  # the timed region begins here
            self.memory.start()
        elif len(self.ends) > self.warmup:
            self.peak = self.memory.peak_mib()

    def result(self, name: str, meta_batch: int) -> dict:
        gaps = [b - a for a, b in zip(self.ends[:-1], self.ends[1:], strict=True)]
        steps = gaps[self.warmup - 1 :]  # gap i-1 is step i: the timed ones start at `warmup`
        inside = self.inside[self.warmup :]
        median = statistics.median(steps)
        return {
            "name": name,
            "timed_steps": len(steps),
            "tasks_per_s": meta_batch / median,
            "ms_per_step": 1000 * median,
            "ms_per_step_min": 1000 * min(steps),
            "ms_in_step": 1000 * statistics.median(inside) if inside else None,
            "peak_mem_mib": self.peak,
            "step_ms_all": [1000 * s for s in steps],
        }


class ClockCallback(pl.Callback):
    """Feeds Lightning's training steps to a Clock."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.step_start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.step_end()


def time_loop(step, args, device: torch.device, name: str, count_flops: bool = False) -> dict:
    """``count_flops``: the first warm-up step runs under torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    clock, counter = Clock(device, args.warmup, Memory(device)), FlopCounterMode(display=False)
    for i in range(args.warmup + args.steps):
        clock.step_start()
        with counter if count_flops and i == 0 else nullcontext():
            step()
        clock.step_end()
    result = clock.result(name, args.meta_batch)
    if count_flops:
        result["flops_per_task"] = counter.get_total_flops() / args.meta_batch
    return result


# -- configuration and data -----------------------------------------------------------------------
def compose(args, engine: str, run_dir: Path, algorithm: str = "maml", extra=()):
    """The run config as metalab-train composes it (conf/ + overrides; ``extra`` replaces the
    keys it names)."""
    from metalab.run.config import compose as compose_run

    steps = args.warmup + args.steps
    overrides = [
        f"algorithm={algorithm}",
        "backbone=conv4",
        "dataset=glyphs",
        f"algorithm.engine={engine}",
        f"algorithm.meta_batch={args.meta_batch}",
        f"algorithm.inner_lr={INNER_LR}",
        f"algorithm.optimizer.lr={OUTER_LR}",
        f"algorithm.inner_steps={args.inner_steps}",
        f"dataset.ways={WAYS}",
        f"dataset.shots={SHOTS}",
        f"dataset.queries={QUERIES}",
        # one epoch, no validation; the test split is loaded but never run (test_episodes > 0)
        f"steps={steps}",
        f"val_every={steps}",
        "val_episodes=0",
        "test_episodes=1",
        f"hardware={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"hardware.precision={args.precision}",
    ]
    if algorithm not in ("maml", "anil"):  # the inner-loop keys are MAML's
        overrides = [
            o
            for o in overrides
            if not o.startswith(("algorithm.engine", "algorithm.inner_", "algorithm.optimizer"))
        ]
    keys = {o.split("=")[0] for o in extra}
    overrides = [o for o in overrides if o.split("=")[0] not in keys] + list(extra)
    # W&B offline when installed (the default logger), else the CSV logger alone
    overrides += ["logger.wandb.mode=offline"] if importable("wandb") else ["logger=csv"]
    return compose_run(overrides, run_dir)


def load_images(cfg):
    """The glyphs dataset (generated into paths.cache_dir on first use, ~10 s)."""
    import hydra

    return hydra.utils.instantiate(cfg.dataset.load)


def conv4(device: torch.device) -> torch.nn.Module:
    from metalab.backbones.conv4 import Conv4

    return Conv4((1, 28, 28), out_dim=WAYS).to(device)


# -- 1. metalab's pipeline ----------------------------------------------------------------------
def bench_pipeline(
    engine: str, args, device: torch.device, out_dir: Path, algorithm: str = "maml", extra=()
) -> dict:
    """metalab.run.training.run without its test phase, with a clock on the training steps."""
    from metalab.algorithms.inner_loop import resolve_engine
    from metalab.run import training as pipeline
    from metalab.run.config import check_config

    run_dir = out_dir / f"{algorithm}-{engine}"
    cfg = compose(args, engine, run_dir, algorithm, extra)
    check_config(cfg)
    pipeline.quiet_known_warnings()
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule = pipeline.prepare(cfg, run_dir)  # the run's own setup, step by step
    model, _loggers, trainer = pipeline.build_run(cfg, run_dir)
    clock = Clock(device, args.warmup, Memory(device))
    trainer.callbacks.append(ClockCallback(clock))
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        if "wandb" in sys.modules:  # else the next run's WandbLogger reuses this W&B run
            sys.modules["wandb"].finish()
    result = clock.result(pipeline_name(algorithm, engine), args.meta_batch)
    result["engine"] = resolve_engine(engine, device) if algorithm in ("maml", "anil") else "-"
    return result


def pipeline_name(algorithm: str, engine: str) -> str:
    return f"pipeline/{engine}" if algorithm == "maml" else f"{algorithm}/{engine}"


# -- 2. learn2learn's own recipe ----------------------------------------------------------------
def bench_learn2learn(args, device: torch.device, images) -> dict:
    """examples/vision/maml_omniglot.py on the glyphs train split (its validation tasks left
    out, as in the pipelines): the images sit in memory as normalised float tensors, the best
    case for its Taskset, which loads every sample of a task through Dataset.__getitem__."""
    import learn2learn as l2l
    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    train = images.train
    x = (train.images.float() / 255 - images.mean[0]) / images.std[0]
    meta = l2l.data.MetaDataset(torch.utils.data.TensorDataset(x, train.labels))
    transforms = [
        l2l.data.transforms.NWays(meta, WAYS),
        l2l.data.transforms.KShots(meta, SHOTS + QUERIES),
        l2l.data.transforms.LoadData(meta),
        l2l.data.transforms.RemapLabels(meta),
        l2l.data.transforms.ConsecutiveLabels(meta),
    ]
    tasks = l2l.data.TaskDataset(meta, task_transforms=transforms, num_tasks=20000)
    maml = l2l.algorithms.MAML(conv4(device), lr=INNER_LR, first_order=False)
    opt = torch.optim.Adam(maml.parameters(), OUTER_LR)
    loss = torch.nn.CrossEntropyLoss(reduction="mean")
    # ConsecutiveLabels sorts the samples by class: the first SHOTS of each class adapt
    support = torch.arange(WAYS * (SHOTS + QUERIES)) % (SHOTS + QUERIES) < SHOTS

    def fast_adapt(batch, learner):
        data, labels = (t.to(device) for t in batch)
        learner.adapt(loss(learner(data[support]), labels[support]))
        predictions = learner(data[~support])
        accuracy = (predictions.argmax(1) == labels[~support]).float().mean()
        return loss(predictions, labels[~support]), accuracy

    def step():
        opt.zero_grad()
        error = accuracy = 0.0
        for _ in range(args.meta_batch):
            task_error, task_accuracy = fast_adapt(tasks.sample(), maml.clone())
            task_error.backward()
            error += task_error.item()  # the example's bookkeeping (a sync per task on CUDA)
            accuracy += task_accuracy.item()
        for p in maml.parameters():
            p.grad.data.mul_(1.0 / args.meta_batch)
        opt.step()

    return time_loop(step, args, device, "learn2learn")


# -- 3. the bare-compute floor ------------------------------------------------------------------
def bench_floor(args, device: torch.device, images) -> dict:
    """One fixed batch on the device; functional conv4, second-order inner step, Adam."""
    return time_loop(floor_step(args, device, images), args, device, "floor", count_flops=True)


def floor_step(args, device: torch.device, images, engine: str | None = None):
    """The floor's step; with ``engine``, the same step through metalab's InnerLoop."""
    from torch.func import functional_call

    from metalab.algorithms.inner_loop import SGD, InnerLoop, Mode
    from metalab.data.sampler import ImageEpisodes, generator

    source = ImageEpisodes(images.train, images.mean, images.std).to(device)
    plan = source.plan(generator(0), args.meta_batch, WAYS, SHOTS, QUERIES)
    ep = source.episodes(plan, SHOTS)
    torch.manual_seed(0)
    net = conv4(device)
    params = dict(net.named_parameters())
    opt = torch.optim.Adam(params.values(), OUTER_LR)
    inner = InnerLoop(net)

    def losses():
        if engine is not None:
            preds, _ = inner.run(
                params,
                ep.support_x,
                ep.support_y,
                ep.query_x,
                1,
                SGD(INNER_LR),
                Mode.SECOND_ORDER,
                engine,
            )
            return F.cross_entropy(preds.flatten(0, 1), ep.query_y.flatten())
        out = []
        for i in range(args.meta_batch):
            inner_loss = F.cross_entropy(
                functional_call(net, params, (ep.support_x[i],)), ep.support_y[i]
            )
            grads = torch.autograd.grad(inner_loss, tuple(params.values()), create_graph=True)
            fast = {k: p - INNER_LR * g for (k, p), g in zip(params.items(), grads, strict=True)}
            out.append(F.cross_entropy(functional_call(net, fast, (ep.query_x[i],)), ep.query_y[i]))
        return torch.stack(out).mean()

    def step():
        opt.zero_grad(set_to_none=True)
        losses().backward()
        opt.step()

    return step


def bench_interleaved(args, device: torch.device, images) -> list[dict]:
    """The floor and the ``auto`` engine's bare step, taking turns (one step each per round,
    ``--steps`` rounds after ``--warmup``): on a loaded machine both see the same load."""
    steps = {
        "interleaved/floor": floor_step(args, device, images),
        "interleaved/auto": floor_step(args, device, images, "auto"),
    }
    times = {name: [] for name in steps}
    for round_ in range(args.warmup + args.steps):
        for name, step in steps.items():
            sync(device)
            t = time.perf_counter()
            step()
            sync(device)
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - t)
    from metalab.algorithms.inner_loop import resolve_engine

    return [
        {
            "name": name,
            "engine": resolve_engine("auto", device) if "auto" in name else "-",
            "tasks_per_s": args.meta_batch / statistics.median(ts),
            "ms_per_step": 1000 * statistics.median(ts),
            "ms_per_step_min": 1000 * min(ts),
            "ms_in_step": None,
            "peak_mem_mib": math.nan,
            "step_ms_all": [1000 * t for t in ts],
        }
        for name, ts in times.items()
    ]


# -- report -------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(results: list[dict], memory_label: str, device_name: str) -> None:
    head = (
        f"{'benchmark':<22}{'engine':<9}{'tasks/s':>10}{'ms/step':>11}{'min ms':>11}"
        f"{'in-step ms':>12}{'peak MiB':>11}{'GFLOP/s':>10}"
    )
    print(f"\n{device_name}\n" + head + "\n" + "-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['name']:<22}failed: {r['error']}")
            continue
        inside = "-" if r.get("ms_in_step") is None else f"{r['ms_in_step']:.1f}"
        flops = "-" if r.get("gflop_per_s") is None else f"{r['gflop_per_s']:.1f}"
        print(
            f"{r['name']:<22}{r.get('engine', '-'):<9}{r['tasks_per_s']:>10.2f}"
            f"{r['ms_per_step']:>11.1f}{r['ms_per_step_min']:>11.1f}{inside:>12}"
            f"{r['peak_mem_mib']:>11.1f}{flops:>10}"
        )
        if "mem_per_task_mib" in r:
            print(
                f"{'':<22}per task {r['mem_per_task_mib']:.1f} MiB at {r['image_size']}px, "
                f"~{r['mem_per_task_mib_at_84']:.0f} MiB at 84px: meta-batch <= "
                f"{r['max_meta_batch_80gb']} in 80 GB (extrapolated)"
            )
    print(
        f"(median over timed steps; step = end of one outer step to the end of the next; "
        f"in-step = Lightning's batch start -> end; peak MiB: {memory_label}; GFLOP/s: "
        f"torch.utils.flop_counter's count of the floor's step times tasks/s)"
    )


def add_flops(results: list[dict]) -> None:
    """Achieved FLOP/s of the conv4 MAML rows: the floor's FLOPs per task (the same math)."""
    per_task = next((r["flops_per_task"] for r in results if "flops_per_task" in r), None)
    for r in results:
        maml = r["name"] in ("floor", "learn2learn") or r["name"].startswith(
            ("pipeline/", "interleaved/")
        )
        if per_task and maml and "error" not in r:
            r["gflop_per_s"] = per_task * r["tasks_per_s"] / 1e9


def headline(results: list[dict]) -> tuple[float, float]:
    by_name = {r["name"]: r for r in results if "error" not in r}
    auto, l2l, floor = (by_name.get(n) for n in ("pipeline/auto", "learn2learn", "floor"))
    speedup = auto["tasks_per_s"] / l2l["tasks_per_s"] if auto and l2l else math.nan
    overhead = auto["ms_per_step"] / floor["ms_per_step"] if auto and floor else math.nan
    return speedup, overhead


def goal_figures(results: list[dict], device: torch.device) -> dict[str, float]:
    """One figure per goal of the speed issue (NaN: not measured in this run)."""
    by_name = {r["name"]: r for r in results if "error" not in r}
    auto, floor = by_name.get("pipeline/auto"), by_name.get("floor")
    plain, ckpt = by_name.get("memory/plain"), by_name.get("memory/checkpoint")
    proto, bare = by_name.get("protonet/pipeline"), by_name.get("protonet/bare")
    cuda = device.type == "cuda"
    return {
        "gpu_tasks_per_s": auto["tasks_per_s"] if cuda and auto else math.nan,
        "cpu_step_vs_loop": auto["ms_per_step"] / floor["ms_per_step"]
        if not cuda and auto and floor
        else math.nan,
        "cpu_step_vs_loop_interleaved": by_name["interleaved/auto"]["ms_per_step"]
        / by_name["interleaved/floor"]["ms_per_step"]
        if not cuda and "interleaved/auto" in by_name
        else math.nan,
        "mem_per_task_ckpt_vs_plain": ckpt["mem_per_task_mib"] / plain["mem_per_task_mib"]
        if plain and ckpt and plain["mem_per_task_mib"] > 0
        else math.nan,
        "ckpt_step_vs_plain": ckpt["ms_per_step"] / plain["ms_per_step"]
        if plain and ckpt
        else math.nan,
        "protonet_vs_bare": proto["ms_per_step"] / bare["ms_per_step"]
        if proto and bare
        else math.nan,
    }


def summary(figures: dict[str, float]) -> str:
    return " ".join(f"{k}={'n/a' if math.isnan(v) else f'{v:.2f}'}" for k, v in figures.items())


def finite(x: float) -> float | None:
    return None if math.isnan(x) else x  # JSON has no NaN


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, help="timed outer steps (default: 5 CPU, 30 CUDA)")
    p.add_argument("--warmup", type=int, help="untimed first steps (default: 1 CPU, 5 CUDA)")
    p.add_argument("--meta-batch", type=int, default=32, help="tasks per outer step")
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help="metalab engines to run in the pipeline (comma-separated)",
    )
    p.add_argument(
        "--precision",
        default="32-true",
        help="pipeline trainer precision; 32-true matches the other benchmarks "
        "(conf/hardware/gpu.yaml uses bf16-mixed)",
    )
    p.add_argument(
        "--inner-steps",
        type=int,
        default=1,
        help="inner steps of the pipelines (floor and learn2learn take 1)",
    )
    p.add_argument(
        "--pipelines-only",
        action="store_true",
        help="leave out the floor and learn2learn benchmarks",
    )
    p.add_argument(
        "--anil",
        action="store_true",
        help="also run the pipeline with algorithm=anil (same settings, same engines) "
        "and print ANIL's tasks/s over MAML's",
    )
    p.add_argument(
        "--no-learn2learn", action="store_true", help="leave out learn2learn's recipe (slow on CPU)"
    )
    p.add_argument(
        "--interleaved",
        action="store_true",
        help="also time the floor and the auto engine's bare step taking turns, "
        "for a ratio that a varying machine load does not skew",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="also run the memory goal: ResNet-12 second-order MAML, 5-way 5-shot, "
        "with and without algorithm.checkpoint (benchmarks/goals.py)",
    )
    p.add_argument("--memory-size", type=int, help="its image size (default: 84 CUDA, 32 CPU)")
    p.add_argument(
        "--memory-batch",
        type=int,
        help="its smaller meta-batch; the larger is twice it (default: 2 CUDA, 1 CPU)",
    )
    p.add_argument(
        "--memory-engine",
        default="auto",
        choices=("auto", "loop", "fused"),
        help="its engine (auto: the one checkpointing picks, loop)",
    )
    p.add_argument(
        "--protonet",
        action="store_true",
        help="also run the ProtoNet goal: ResNet-12 5-way 5-shot, meta-batch 1, "
        "the pipeline against a bare loop over the same batches",
    )
    p.add_argument("--protonet-size", type=int, help="its image size (default: 84 CUDA, 32 CPU)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats of each memory measurement (the median is reported)",
    )
    p.add_argument("--out", type=Path, help="also write every number to this JSON file")
    args = p.parse_args(argv)
    full = args.device == "cuda"
    args.memory_size = args.memory_size or (84 if full else 32)
    args.memory_batch = args.memory_batch or (2 if full else 1)
    args.protonet_size = args.protonet_size or (84 if full else 32)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.engines = [e for e in args.engines.split(",") if e]
    if bad := set(args.engines) - set(ENGINES):
        p.error(f"unknown engines {sorted(bad)}; allowed: {', '.join(ENGINES)}")
    if min(args.steps, args.warmup, args.meta_batch, args.inner_steps) < 1:
        p.error("--steps, --warmup, --meta-batch and --inner-steps must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU visible")
    return args


def run_guarded(name: str, fn, *fn_args) -> dict:
    """One failing benchmark (e.g. learn2learn not installed) must not lose the others."""
    print(f"\n=== {name} ===", flush=True)
    try:
        return fn(*fn_args)
    except Exception as exc:  # reported in the table and the JSON
        traceback.print_exc()
        return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def listed(result: dict | list[dict]) -> list[dict]:
    return result if isinstance(result, list) else [result]


def main(argv=None) -> None:
    args = parse_args(argv)
    import_metalab()
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")  # what metalab.run.training sets: the same for all
    env = environment(device)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(
        f"workload: MAML second order, conv4, {WAYS}-way {SHOTS}-shot {QUERIES} queries, "
        f"28x28, meta-batch {args.meta_batch}, 1 inner step; {args.warmup} warm-up + "
        f"{args.steps} timed steps; pipeline precision {args.precision}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="metalab-throughput-") as tmp:
        images = load_images(compose(args, "auto", Path(tmp) / "data"))
        results = (
            [] if args.pipelines_only else [run_guarded("floor", bench_floor, args, device, images)]
        )
        if not (args.pipelines_only or args.no_learn2learn):
            results.append(run_guarded("learn2learn", bench_learn2learn, args, device, images))
        for engine in args.engines:
            results.append(
                run_guarded(f"pipeline/{engine}", bench_pipeline, engine, args, device, Path(tmp))
            )
        for engine in args.engines if args.anil else ():
            results.append(
                run_guarded(
                    pipeline_name("anil", engine),
                    bench_pipeline,
                    engine,
                    args,
                    device,
                    Path(tmp),
                    "anil",
                )
            )

        if args.interleaved:
            results += listed(run_guarded("interleaved", bench_interleaved, args, device, images))
        if args.memory:
            results += listed(run_guarded("memory", goals.bench_memory, args, device, Memory, sync))
        if args.protonet:
            results += listed(
                run_guarded(
                    "protonet",
                    goals.bench_protonet,
                    args,
                    device,
                    partial(bench_pipeline, "auto", args, device, Path(tmp)),
                    lambda algorithm, extra: compose(
                        args, "auto", Path(tmp) / "protonet", algorithm, extra
                    ),
                )
            )

    memory_label = Memory(device).label
    add_flops(results)
    print_table(results, memory_label, f"{env['device_name']} ({device})")
    speedup, overhead = headline(results)
    figures = goal_figures(results, device)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "environment": env,
                    "memory": memory_label,
                    "settings": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    },
                    "results": results,
                    "speedup_vs_learn2learn": finite(speedup),
                    "overhead_vs_floor": finite(overhead),
                    "goals": {k: finite(v) for k, v in figures.items()},
                },
                indent=2,
            )
        )
        print(f"wrote {args.out}")
    print(f"speedup_vs_learn2learn={speedup:.2f} overhead_vs_floor={overhead:.2f}")
    by_name = {r["name"]: r for r in results if "error" not in r}
    for engine in args.engines if args.anil else ():
        maml, anil = by_name.get(f"pipeline/{engine}"), by_name.get(f"anil/{engine}")
        if maml and anil:
            print(f"anil_vs_maml[{engine}]={anil['tasks_per_s'] / maml['tasks_per_s']:.2f}")
    print(summary(figures))


if __name__ == "__main__":
    main()

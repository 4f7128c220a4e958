"""The memory and ProtoNet benchmarks of benchmarks/throughput.py (``--memory``, ``--protonet``)
and its FLOP count.

* memory: second-order MAML on ResNet-12, 5-way 5-shot, 15 queries, one inner step, with and
  without ``checkpoint`` (the same engine otherwise: the one ``auto`` picks with it, ``loop``).
  Peak memory per task is the slope of the peak over two meta-batch sizes (what one more task
  costs: weights and optimizer state drop out); the largest meta-batch for 80 GB is
  extrapolated from it (by the pixel count where the images are smaller than 84x84);
* protonet: the ProtoNet pipeline (Lightning, sampler, logging) against a bare loop of
  ``meta_loss`` / backward / Adam over the same pre-drawn batches; the sampler's own time per
  batch is measured apart, the rest of the gap is Lightning and logging.
"""

from __future__ import annotations

import statistics
import time

import torch

WAYS, SHOTS, QUERIES, INNER_LR = 5, 5, 15, 0.01
FULL_SIZE, BUDGET_GIB = 84, 80


def step_flops(step) -> int:
    """FLOPs of one call of ``step`` (torch.utils.flop_counter: convolutions and matmuls, the
    backward passes included)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


# -- memory ---------------------------------------------------------------------------------------
def maml_step(device, size: int, meta_batch: int, checkpoint: bool, engine: str):
    """One outer step of second-order MAML on ResNet-12 (fixed random episodes)."""
    from metalab.algorithms.inner_loop import SGD, InnerLoop, Mode
    from metalab.backbones.resnet12 import ResNet12

    torch.manual_seed(0)
    net = ResNet12((3, size, size), out_dim=WAYS).to(device)
    inner = InnerLoop(net)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    sx = torch.randn(meta_batch, WAYS * SHOTS, 3, size, size, device=device)
    qx = torch.randn(meta_batch, WAYS * QUERIES, 3, size, size, device=device)
    sy = torch.arange(WAYS, device=device).repeat_interleave(SHOTS).expand(meta_batch, -1)
    qy = torch.arange(WAYS, device=device).repeat_interleave(QUERIES).expand(meta_batch, -1)

    def step():
        opt.zero_grad(set_to_none=True)
        preds, _ = inner.run(
            inner.params(),
            sx,
            sy,
            qx,
            1,
            SGD(INNER_LR),
            Mode.SECOND_ORDER,
            engine,
            checkpoint=checkpoint,
        )
        torch.nn.functional.cross_entropy(preds.flatten(0, 1), qy.flatten()).backward()
        opt.step()

    return step


def bench_memory(args, device, memory_cls, sync) -> list[dict]:
    """Rows ``memory/plain`` and ``memory/checkpoint``: step time at the larger meta-batch,
    peak memory per task, and the meta-batch that fits in 80 GB (extrapolated)."""
    size, batches = args.memory_size, (args.memory_batch, 2 * args.memory_batch)
    from metalab.algorithms.inner_loop import resolve_engine

    engine = resolve_engine(args.memory_engine, device, checkpoint=True)  # what auto runs
    rows = []
    for checkpoint in (False, True):
        peaks, times = {}, []
        for b in batches:
            step = maml_step(device, size, b, checkpoint, engine)
            step()  # warm-up: allocator pools, oneDNN primitives
            samples = []
            for _ in range(args.repeats):
                memory = memory_cls(device)
                memory.start()
                sync(device)
                t = time.perf_counter()
                step()
                sync(device)
                if b == batches[1]:
                    times.append(time.perf_counter() - t)
                samples.append(memory.peak_mib())
            peaks[b] = statistics.median(samples)
        per_task = (peaks[batches[1]] - peaks[batches[0]]) / (batches[1] - batches[0])
        fixed = max(peaks[batches[0]] - per_task * batches[0], 0.0)
        scale = (FULL_SIZE / size) ** 2
        fits = (
            int((BUDGET_GIB * 1024 - fixed * scale) // (per_task * scale)) if per_task > 0 else None
        )
        median = statistics.median(times)
        rows.append(
            {
                "name": f"memory/{'checkpoint' if checkpoint else 'plain'}",
                "engine": engine,
                "tasks_per_s": batches[1] / median,
                "ms_per_step": 1000 * median,
                "ms_per_step_min": 1000 * min(times),
                "ms_in_step": None,
                "peak_mem_mib": peaks[batches[1]],
                "mem_per_task_mib": per_task,
                "mem_per_task_mib_at_84": per_task * scale,
                "max_meta_batch_80gb": fits,
                "image_size": size,
                "meta_batches": list(batches),
                "step_ms_all": [1000 * t for t in times],
            }
        )
        print(
            f"{rows[-1]['name']}: {per_task:.1f} MiB/task at {size}x{size} "
            f"(~{per_task * scale:.0f} MiB at 84x84, meta-batch <= {fits} in 80 GB), "
            f"{1000 * median:.0f} ms/step at meta-batch {batches[1]}",
            flush=True,
        )
    return rows


# -- protonet -------------------------------------------------------------------------------------
def bench_protonet(args, device, run_pipeline, compose) -> list[dict]:
    """Rows ``protonet/pipeline``, ``protonet/bare`` and ``protonet/sampler``."""
    from metalab import run as pipeline

    overrides = [
        "backbone=resnet12",
        f"dataset.image_size={args.protonet_size}",
        f"dataset.shots={SHOTS}",
        f"dataset.queries={QUERIES}",
        "algorithm.meta_batch=1",
    ]
    piped = run_pipeline("protonet", overrides)
    piped["name"] = "protonet/pipeline"
    piped["tasks_per_s"] = 1000 / piped["ms_per_step"]  # its clock counted --meta-batch tasks
    cfg = compose("protonet", overrides)
    datamodule = pipeline.build_datamodule(cfg)
    datamodule.load()
    for source in datamodule.sources.values():
        source.to(device)
    n = args.warmup + args.steps
    t = time.perf_counter()
    batches = [datamodule.train_episodes(i) for i in range(n)]
    sampler_ms = 1000 * (time.perf_counter() - t) / n
    torch.manual_seed(cfg.seed)
    model = pipeline.build_model(cfg).to(device)
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    times = []
    for i, episodes in enumerate(batches):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = model.meta_loss(episodes)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    bare = statistics.median(times)
    common = {"engine": "-", "ms_in_step": None, "peak_mem_mib": float("nan")}
    return [
        piped,
        {
            "name": "protonet/bare",
            "tasks_per_s": 1 / bare,
            "ms_per_step": 1000 * bare,
            "ms_per_step_min": 1000 * min(times),
            "step_ms_all": [1000 * x for x in times],
            **common,
        },
        {
            "name": "protonet/sampler",
            "tasks_per_s": 1000 / sampler_ms,
            "ms_per_step": sampler_ms,
            "ms_per_step_min": sampler_ms,
            **common,
        },
    ]

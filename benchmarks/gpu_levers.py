"""The levers of the GPU throughput goal, each alone, on the bare second-order MAML step.

Workload as benchmarks/throughput.py (conv4, 28x28 random images, 5-way 1-shot, 15 queries,
one inner step, Adam outer step): one outer step of ``InnerLoop.run`` + backward + Adam per
variant, with tasks/s, ms/step and achieved TFLOP/s (torch.utils.flop_counter's count of one
fp32 step). Variants: the engines (loop, fused, vmap), bf16 autocast, channels-last,
``torch.compile`` of the step, CUDA graphs (compile's ``reduce-overhead`` mode) and larger
meta-batches. A variant that fails is reported as failed; the others still run.

usage (repo root): PYTHONPATH=src python benchmarks/gpu_levers.py [--device cuda]
On a machine without CUDA it runs a tiny CPU version (a check that the script works).
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from contextlib import nullcontext

import torch
import torch.nn.functional as F

WAYS, SHOTS, QUERIES, INNER_LR = 5, 1, 15, 0.4


def make_step(
    device, meta_batch, engine="vmap", bf16=False, channels_last=False, compile_mode=None
):
    from metalab.algorithms.inner_loop import SGD, InnerLoop, Mode
    from metalab.backbones.conv4 import Conv4

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = Conv4((1, 28, 28), out_dim=WAYS).to(device, memory_format=fmt)
    inner = InnerLoop(net)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def images(n):
        x = torch.randn(meta_batch * n, 1, 28, 28, device=device).contiguous(memory_format=fmt)
        return x.unflatten(0, (meta_batch, n))

    sx, qx = images(WAYS * SHOTS), images(WAYS * QUERIES)
    sy = torch.arange(WAYS, device=device).repeat_interleave(SHOTS).expand(meta_batch, -1)
    qy = torch.arange(WAYS, device=device).repeat_interleave(QUERIES).expand(meta_batch, -1)
    autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else nullcontext()

    def loss():
        with autocast:
            preds, _ = inner.run(
                inner.params(), sx, sy, qx, 1, SGD(INNER_LR), Mode.SECOND_ORDER, engine
            )
            return F.cross_entropy(preds.flatten(0, 1).float(), qy.flatten())

    forward = torch.compile(loss, mode=compile_mode) if compile_mode else loss

    def step():
        opt.zero_grad(set_to_none=True)
        forward().backward()
        opt.step()

    return step


def measure(step, device, warmup, steps) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def flops_per_task(device, meta_batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        make_step(device, meta_batch)()
    return counter.get_total_flops() / meta_batch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--meta-batch", type=int)
    p.add_argument("--steps", type=int)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    mb = args.meta_batch or (32 if cuda else 2)
    steps, warmup = args.steps or (20 if cuda else 1), 5 if cuda else 1
    torch.set_float32_matmul_precision("high")
    name = torch.cuda.get_device_name(device) if cuda else "CPU (a check only)"
    variants = {
        "vmap": {},
        "loop": {"engine": "loop"},
        "fused": {"engine": "fused"},
        "vmap+bf16": {"bf16": True},
        "vmap+channels_last": {"channels_last": True},
        "vmap+bf16+channels_last": {"bf16": True, "channels_last": True},
        "fused+bf16": {"engine": "fused", "bf16": True},
        "vmap+compile": {"compile_mode": "default"},
        "vmap+cuda_graphs": {"compile_mode": "reduce-overhead"},
        f"vmap mb={4 * mb}": {"meta_batch": 4 * mb},
        f"vmap+bf16 mb={4 * mb}": {"meta_batch": 4 * mb, "bf16": True},
    }
    if not cuda:  # the CPU check: no compile (minutes of inductor), no large batches
        variants = {
            k: v for k, v in variants.items() if "compile_mode" not in v and "meta_batch" not in v
        }
    per_task = flops_per_task(device, mb)
    print(f"{name}: {per_task / 1e9:.2f} GFLOP per task (fp32 step, flop_counter)")
    print(f"{'variant':<28}{'tasks/s':>10}{'ms/step':>10}{'TFLOP/s':>10}")
    for label, kw in variants.items():
        b = kw.pop("meta_batch", mb)
        try:
            s = measure(make_step(device, b, **kw), device, warmup, steps)
            print(
                f"{label:<28}{b / s:>10.1f}{1000 * s:>10.1f}{per_task * b / s / 1e12:>10.2f}",
                flush=True,
            )
        except Exception as exc:  # a lever that does not work here is a result too
            traceback.print_exc(limit=2)
            print(f"{label:<28}failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()

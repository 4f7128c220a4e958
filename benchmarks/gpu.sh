#!/usr/bin/env bash
# The GPU checks of the speed goals, in one go, on a machine with torch + Lightning (Python 3.12)
# but no network. Carry build/gpuwheels (made here with benchmarks/README.md's "GPU wheels"
# command). Installs them, builds learn2learn from its sdist, then runs:
#   1. gpu_levers.py: engines, bf16 autocast, channels-last, torch.compile, CUDA graphs, larger
#      meta-batches on the bare step, with achieved TFLOP/s;
#   2. throughput.py --device cuda with --memory (ResNet-12 84x84, with and without
#      algorithm.checkpoint) and --protonet (ResNet-12 84x84 5-way 5-shot): the goal lines;
#   3. one short bf16-mixed MAML training run (accuracy unchanged?).
# Results land in $OUT. Without CUDA it runs the CPU fallback: a tiny gpu_levers.py check only.
set -u
OUT=${OUT:-/tmp/metalab-gpu}
mkdir -p "$OUT"
W=build/gpuwheels
SITE=$(mktemp -d)
if ! python3 -c "import hydra, omegaconf" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$W"/*.whl \
        || echo "wheel install FAILED"
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" \
        "$W"/antlr4-python3-runtime-*.tar.gz || echo "antlr4 install FAILED"
fi
L2L=$(mktemp -d)
if ! python3 -c "import learn2learn" 2>/dev/null && [ -f "$W"/learn2learn-0.2.0.tar.gz ]; then
    # learn2learn's shipped C files predate Python 3.11: build_ext regenerates them from .pyx
    tar xzf "$W"/learn2learn-0.2.0.tar.gz -C "$L2L"
    (cd "$L2L"/learn2learn-0.2.0 && python3 setup.py build_ext --inplace) \
        > "$OUT/l2l-build.log" 2>&1 || { echo "learn2learn build FAILED"; tail -5 "$OUT/l2l-build.log"; }
fi
export PYTHONPATH="src:$SITE:$L2L/learn2learn-0.2.0:${PYTHONPATH:-}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA: CPU fallback (a check that the scripts run)"
    timeout 300 python3 benchmarks/gpu_levers.py --device cpu 2>&1 | tee "$OUT/levers-cpu.log" \
        | grep -v -i -E "warn|^\s*$"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 benchmarks/gpu_levers.py --device cuda 2>&1 | tee "$OUT/levers.log" \
    | grep -v -i -E "warn|^\s*$|^  File|^Traceback"
timeout 300 python3 benchmarks/throughput.py --device cuda --steps 15 --warmup 3 \
    --engines vmap,fused,auto --memory --protonet --out "$OUT/throughput.json" 2>&1 \
    | tee "$OUT/throughput.log" | grep -v -i -E "warn|^\s*$" | tail -25
timeout 90 python3 -m metalab.run.train hardware=gpu logger=csv algorithm=maml algorithm.meta_batch=32 \
    steps=100 val_every=50 val_episodes=50 test_episodes=100 "hydra.run.dir=$OUT/bf16_maml" \
    > "$OUT/bf16_maml.log" 2>&1; tail -3 "$OUT/bf16_maml.log"
cat "$OUT/bf16_maml/results.json" 2>/dev/null | head -20

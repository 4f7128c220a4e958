#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with torch + Lightning but no network: installs the
# wheels carried in build/gpuwheels (see benchmarks/README.md), builds learn2learn from its sdist,
# then runs the throughput benchmark and one bf16-mixed training run. Results land in $OUT.
set -u
OUT=${OUT:-/tmp/metalab-gpu}
mkdir -p "$OUT"
W=build/gpuwheels
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$W"/*.whl \
    || echo "wheel install FAILED"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" \
    "$W"/antlr4-python3-runtime-*.tar.gz "$W"/gym-*.tar.gz || echo "sdist install FAILED"
# learn2learn's shipped C files predate Python 3.11: build_ext regenerates them from the .pyx
L2L=$(mktemp -d)
tar xzf "$W"/learn2learn-0.2.0.tar.gz -C "$L2L"
(cd "$L2L"/learn2learn-0.2.0 && python3 setup.py build_ext --inplace) > "$OUT/l2l-build.log" 2>&1 \
    || { echo "learn2learn build FAILED"; tail -5 "$OUT/l2l-build.log"; }
export PYTHONPATH="src:$SITE:$L2L/learn2learn-0.2.0"
python3 -c "import hydra, learn2learn; print('hydra', hydra.__version__, 'l2l', learn2learn.__version__)"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 210 python3 benchmarks/throughput.py --device cuda --steps 15 --warmup 3 \
    --out "$OUT/throughput.json" \
    2>&1 | tee "$OUT/throughput.log" | grep -v -E "^\s*$|Warning|warn"
timeout 110 python3 -m metalab.run.train hardware=gpu logger=csv algorithm=maml algorithm.meta_batch=32 \
    steps=100 val_every=50 val_episodes=50 test_episodes=100 "hydra.run.dir=$OUT/bf16_maml" \
    > "$OUT/bf16_maml.log" 2>&1; tail -6 "$OUT/bf16_maml.log"
cat "$OUT/bf16_maml/results.json" 2>/dev/null

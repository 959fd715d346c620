#!/usr/bin/env bash
# The GPU check, for whenever a machine with CUDA is at hand (about 2-4 minutes):
#   bash benchmarks/gpu_check.sh
# 1. the CUDA-only tests (skipped everywhere else);
# 2. the reference sweep (64 runs, d=1000, n=200, m=20, 500 steps, 2000 test examples) with
#    the batched engine on the GPU and on the CPU, and the plain per-run path on both for
#    one seed (8 runs), each printed as one JSON line (ms_per_run, engine GFLOP/s);
# 3. the quick suite with --device cuda, end to end;
# 4. the cifar suite at its GPU tier (ResNet-18, width 64), one seed: on the real CIFAR-10
#    when $PTBENCH_DATA holds cifar-10-batches-py/, else on a full-size synthetic copy in the
#    official format (random pixels: a timing, not a result), with a 4-minute limit.
# Nothing is downloaded; everything runs from this checkout (pip install -e '.[test]').
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python - <<'PY' || { echo "gpu_check: this torch sees no CUDA device; nothing to check"; exit 0; }
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CPU threads {torch.get_num_threads()}")
PY

step() { echo; echo "== $*"; }

step "CUDA tests"
timeout 180 python -m pytest -q -p no:cacheprovider -m cuda tests || echo "gpu_check: CUDA tests FAILED"

step "matmul float32 GFLOP/s (GPU, then CPU with 1 and 2 threads)"
timeout 60 python - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
from reference import matmul_gflops
print(f"cuda {matmul_gflops(1, size=4096, device='cuda'):.0f}  cpu-1 {matmul_gflops(1):.0f}  cpu-2 {matmul_gflops(2):.0f}")
PY

step "reference sweep, batched engine, GPU (twice: the first includes CUDA start-up)"
timeout 120 python benchmarks/reference.py --device cuda --path batched
timeout 120 python benchmarks/reference.py --device cuda --path batched
step "reference sweep, batched engine, CPU (1 thread)"
timeout 120 python benchmarks/reference.py --device cpu --path batched
step "per-run path, one seed (8 runs), GPU and CPU"
timeout 120 python benchmarks/reference.py --device cuda --path per-run --seeds 1
timeout 120 python benchmarks/reference.py --device cpu --path per-run --seeds 1

step "quick suite with --device cuda, end to end"
tmp=$(mktemp -d)
( cd "$tmp" && time timeout 300 python -m ptbench run --device cuda --store runs.db --leaderboard lb --quiet )
rm -rf "$tmp"

step "cifar suite at the GPU tier, one seed"
data="${PTBENCH_DATA:-}"
tmp=$(mktemp -d)
if [ -z "$data" ] || [ ! -d "$data/cifar-10-batches-py" ]; then
    echo "no CIFAR-10 under \$PTBENCH_DATA: timing on a synthetic full-size copy (random pixels, accuracies meaningless)"
    data="$tmp/data"
    timeout 120 python - "$data" <<'PY'
import sys; sys.path.insert(0, "tests/plugins")
from pathlib import Path
from test_image_datasets import write_cifar10
write_cifar10(Path(sys.argv[1]), per_batch=10000)
PY
fi
sed 's/tier=cpu/tier=gpu/' suites/cifar.toml > "$tmp/cifar-gpu.toml"
( cd "$tmp" && time timeout 240 python -m ptbench run --suite cifar-gpu.toml --seeds 1 --data-dir "$data" --device cuda \
    --store runs.db --leaderboard lb --quiet && sed -n '1,40p' lb/README.md )
rm -rf "$tmp"

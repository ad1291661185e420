#!/usr/bin/env bash
# The GPU check in one script (about 4-5 minutes on one GPU): the bf16 tests on CUDA, then
# bench_presets.py with host-sync checking. Its outputs go to $OUT (default ./gpu-check):
# gpu.txt, tests.txt, bench.txt and bench_presets.json (rewritten after every row, so a
# timeout keeps the rows done). Run from the repository root: bash benchmarks/gpu_check.sh
set -u
out="$(realpath -m "${OUT:-gpu-check}")"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import tomli_w" 2>/dev/null || {
    echo "tomli_w is missing: carry its wheel (see docs/speed.md) and put it on PYTHONPATH"
    exit 1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/training/test_precision_compile.py -k cuda \
    2>&1 | tail -n 40 | tee "$out/tests.txt"
cd benchmarks && timeout 360 python3 bench_presets.py --device cuda --check-sync \
    --json "$out/bench_presets.json" 2>&1 | tee "$out/bench.txt"

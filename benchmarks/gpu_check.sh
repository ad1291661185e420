#!/usr/bin/env bash
# The GPU check in one script (270 s on one H200): the CUDA tests (the captured
# iteration against the eager one, its resume and sync audit; bf16), and only when they pass
# the benchmarks with --record: bench_presets.py (CUDA graph against eager, host syncs
# checked), bench_seeds.py (64 seeds of the seed preset and 8 of dcgan against one run),
# bench_time_to_quality.py (cdcgan, 3 seeds). Its outputs go to $OUT (default ./gpu-check):
# gpu.txt, tests.txt, presets.txt, bench_presets.json (rewritten after every row), seeds.txt,
# quality.txt, quality.png and RESULTS.md with the recorded sections appended (copy them into
# benchmarks/RESULTS.md). Each part has its own time limit, so a slow one cannot take the rest.
# Run from the repository root: bash benchmarks/gpu_check.sh
set -u -o pipefail
out="$(realpath -m "${OUT:-gpu-check}")"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import tomli_w" 2>/dev/null || {
    echo "tomli_w is missing: carry its wheel (see docs/speed.md) and put it on PYTHONPATH"
    exit 1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -rA -s tests/training/test_graph.py \
    tests/training/test_precision_compile.py -k "cuda or graph or replay or captured" 2>&1 \
    | tee "$out/tests.txt" | tail -n 40 || {
    echo "the CUDA tests failed: no benchmarks"
    exit 1
}
cd benchmarks
timeout 120 python3 bench_presets.py --device cuda --variants fp32,eager --check-sync \
    --iters 200 --json "$out/bench_presets.json" --record 2>&1 | tee "$out/presets.txt"
cp RESULTS.md "$out/RESULTS.md"
for run in "seed 64" "dcgan 8"; do
    set -- $run
    timeout 75 python3 bench_seeds.py --device cuda --preset "$1" --seeds "$2" --iters 500 \
        --baseline one --skip-commands --step --record 2>&1 | tee -a "$out/seeds.txt"
    cp RESULTS.md "$out/RESULTS.md"
done
timeout 150 python3 bench_time_to_quality.py --device cuda --presets cdcgan --seeds 0,1,2 \
    --eval-every 500 --png "$out/quality.png" --record 2>&1 | tee "$out/quality.txt"
cp RESULTS.md "$out/RESULTS.md"

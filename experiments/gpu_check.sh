#!/usr/bin/env bash
# Everything a lent GPU machine should check, in one command (about 9 minutes on one H100/H200), each stage under its
# own time limit so that one slow or failing stage leaves the others' results:
#   1. `make bench-gpu`'s table: ViT-B/16, 224 px, bf16 autocast, batch 64, every method;
#   2. its VTAB-1k sweep estimate with k = 1, 2, 4 jobs per GPU;
#   3. the GPU tests (CUDA graphs equal eager and launch few host calls, bf16 fused paths, GPU cache, mixed precision).
# Results go to experiments/results/bench/ and, with the logs, to $1 (default: gpu-check/).
#     bash experiments/gpu_check.sh [OUT_DIR]
# Uses the python on PATH (PYTHON=... to choose); peftlab is imported from this checkout.
set -u
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-check}")
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
results=experiments/results/bench

save() {  # the GPU results written so far, in one archive (the logs are written to $out directly)
    tar -cf "$out/results.tar" $(ls $results/cuda-* $results/sweep-cuda-* 2>/dev/null) 2>/dev/null
}

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s) $(date -u +%T)"
    local start=$SECONDS
    # at the limit, ABRT: every Python process of the stage prints its stack (PYTHONFAULTHANDLER) into the log
    timeout --signal=ABRT --kill-after=15 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s"
    tail -n 25 "$out/$name.log"
    save
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" -c "import torch, timm, lightning, hydra, omegaconf; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())"
    nproc
} >"$out/env.log" 2>&1
cat "$out/env.log"

stage table "${TABLE_S:-200}" "$py" experiments/bench_gpu.py --only table
stage sweep "${SWEEP_S:-220}" "$py" experiments/bench_gpu.py --only sweep
stage tests "${TESTS_S:-130}" "$py" -m pytest -m gpu -p no:cacheprovider -v -s -o addopts="--strict-markers -ra --durations=15" $(grep -rl "mark.gpu" tests)

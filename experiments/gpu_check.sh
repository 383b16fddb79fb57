#!/usr/bin/env bash
# Everything a lent GPU machine should check, each stage under its own time limit (TABLE_S, SWEEP_S, TESTS_S,
# GRAPHS_S seconds) so that one slow or failing stage leaves the others' results; at the limit every Python process
# of the stage prints its stack into the stage's log:
#   table:  `make bench-gpu`'s table: ViT-B/16, 224 px, bf16 autocast, batch 64, every method (about 2.5 minutes);
#   sweep:  its VTAB-1k sweep estimate with k = SWEEP_KS jobs per GPU (1,2,4: about 6 minutes; each k about 2);
#   tests:  the GPU tests: CUDA graphs equal eager and replay every method's step in few host launches, bf16 fused
#           paths, the GPU cache, mixed precision (about 4 minutes);
#   graphs: the CUDA-graph table (`make bench-gpu ARGS=--graphs`; every model compiled: not in the default set).
# Results go to experiments/results/bench/ and, with the logs, to $1 (default: gpu-check/). Each call must end within
# a lent machine's 10-minute command limit, and a session has about 15 minutes of device time: two calls, the second
# issued at once while the machine is still warm:
#     STAGES="tests table" bash experiments/gpu_check.sh OUT              # about 6.5 minutes, at most 7.7
#     STAGES=sweep SWEEP_KS=1,4 bash experiments/gpu_check.sh OUT         # about 4 minutes
# Uses the python on PATH (PYTHON=... to choose); peftlab is imported from this checkout, its dependencies from that
# python. A machine without hydra-core/omegaconf (the lent H200 image has none): copy hydra, omegaconf and antlr4 from
# a venv's site-packages (pure Python) into a folder and put it on PYTHONPATH.
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

if ! "$py" -c "import torch, timm, lightning, hydra, omegaconf, torchmetrics" 2>/dev/null; then
    echo "error: $py cannot import peftlab's dependencies (torch, timm, lightning, hydra, omegaconf, torchmetrics):" \
        "install them, or put a folder holding them on PYTHONPATH" >&2
    exit 2
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" -c "import torch, timm, lightning, hydra, omegaconf; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())"
    nproc
} >"$out/env.log" 2>&1
cat "$out/env.log"

stages=" ${STAGES-table sweep tests} "
[[ $stages == *" table "* ]] && stage table "${TABLE_S:-200}" "$py" experiments/bench_gpu.py --only table
[[ $stages == *" sweep "* ]] && stage sweep "${SWEEP_S:-400}" "$py" experiments/bench_gpu.py --only sweep \
    --jobs-per-device "${SWEEP_KS:-1,2,4}"
[[ $stages == *" tests "* ]] && stage tests "${TESTS_S:-260}" "$py" -m pytest -m gpu -p no:cacheprovider -v -s \
    -o addopts="--strict-markers -ra --durations=15" $(grep -rl "mark.gpu" tests)
[[ $stages == *" graphs "* ]] && stage graphs "${GRAPHS_S:-500}" "$py" experiments/bench_gpu.py --graphs
exit 0

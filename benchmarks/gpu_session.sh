#!/usr/bin/env bash
# Every GPU measurement of a session in one call (see ../shared/device/README.md):
#   here:   bash benchmarks/gpu_session.sh --stage     (copies the data the run needs into .device/)
#   device: bash benchmarks/gpu_session.sh             (logs to $OUT, or ./artifacts without it)
# Env: SESSION_S (the whole run, default 560: a device session has 15 minutes, the machine's start
# included), CHECK_S (gpu_check's share), BASELINE_N (timed one-at-a-time images), BASELINE_WORKERS
# (fit the other images alone in that many processes until the session's time is up, for packed-vs-alone
# PSNR), VARIANTS, RUN_PYTEST (the tests marked gpu, 60 s), RUN_QUALITY (Set5/Set14 paper quality, ~2 min).
set -uo pipefail
if [ "${1:-}" = "--stage" ]; then
  src=${2:-../shared/data}
  rm -rf .device/data && mkdir -p .device/data
  for s in Set5 Set14 BSD100; do
    mkdir -p .device/data/$s/LR_bicubic
    cp -r "$src/$s/HR" .device/data/$s/ && cp -r "$src/$s/LR_bicubic/X2" .device/data/$s/LR_bicubic/
  done
  du -sh .device
  exit 0
fi
out=${OUT:-artifacts}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=.device/data
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } 2>&1 | tee "$out/env.txt"
start=$(date +%s)
stamp() { echo "== $1 at $(( $(date +%s) - start )) s into the session ($(date -u +%T))" | tee -a "$out/env.txt"; }
stamp gpu_check
# gpu_check keeps the fastest Triton tiles in tiles.json and leaves run's probe timings in the step cache,
# so throughput.py's probe (same card, same batch) reads them instead of timing again.
timeout ${CHECK_S:-220} python3 benchmarks/gpu_check.py --data $D --tiles-out "$out/tiles.json" 2>&1 | tee "$out/check.log"
[ -z "${RUN_PYTEST:-}" ] || timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engine.py tests/test_resize.py 2>&1 | tee -a "$out/check.log"
stamp throughput
left=$(( ${SESSION_S:-560} - $(date +%s) + start ))
timeout $left python3 benchmarks/throughput.py --set $D/BSD100 --scale 2 --preset paper --device cuda \
  --baseline-limit ${BASELINE_N:-4} --baseline-workers ${BASELINE_WORKERS:-12} --variants ${VARIANTS:-bf16 bf16:beside} \
  --time-budget $(( left / 2 )) --quality-budget $(( left - 15 )) --triton-tiles "$out/tiles.json" 2>&1 | tee "$out/throughput.log"
[ -z "${RUN_QUALITY:-}" ] || timeout ${QUALITY_S:-120} python3 benchmarks/quality.py --data $D --sets ${QUALITY_SETS:-Set5 Set14} \
  --scales ${QUALITY_SCALES:-2} --presets ${QUALITY_PRESETS:-paper} --output "$out/quality" 2>&1 | tee "$out/quality.log"
stamp end

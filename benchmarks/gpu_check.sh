#!/usr/bin/env bash
# The GPU validation run: CUDA/NVML-touching tests on a real GPU, a CUDA profile metered by NVML,
# AP/EO re-tuned on the GPU's costs, and every bench system served on the GPU.
#
# usage: bash benchmarks/gpu_check.sh [WORKDIR] [OUTDIR]
#   WORKDIR: a workdir that holds calibration.json and its cached logits (copied, never changed);
#            default .gpucheck/wd (copy hybridserve-out there after a CPU quickstart).
#   OUTDIR:  where the results go (default $OUT on the device machine, else benchmarks/out/gpu).
# Wheels in .whl/ (pydantic, fastapi, ... for Python 3.12) are installed first when present.
set -uo pipefail
src=${1:-.gpucheck/wd}
out=${2:-${OUT:-benchmarks/out/gpu}}
mkdir -p "$out"
wd=/tmp/hybridserve-gpu
rm -rf "$wd" && cp -r "$src" "$wd" && rm -f "$wd"/profile.json "$wd"/policy-*.json "$wd"/plan.json
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
hs() { python3 -m hybridserve.cli "$@"; }
log=$out/gpu-check.log
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
  echo "== tests touching CUDA, NVML, the runtime and the bench (real GPU present)"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m "not e2e" \
    tests/profiling tests/energy tests/runtime tests/bench tests/models 2>&1 | tail -25
  echo "== profile on cuda:0"
  time hs profile --device cuda:0 --workdir "$wd" --time-budget-s 1
  echo "== tune on the GPU's costs"
  hs tune --mode ap --workdir "$wd" && hs tune --mode eo --workdir "$wd"
  echo "== bench: every system served on cuda:0, NVML energy"
  time hs bench --device cuda:0 --workdir "$wd" --saturate --max-requests 20000
} >"$log" 2>&1
cp "$wd"/profile.json "$wd"/report.json "$wd"/policy-ap.json "$wd"/policy-eo.json "$out"/ 2>/dev/null
tail -60 "$log"

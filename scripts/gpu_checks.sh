#!/usr/bin/env bash
# The GPU checks, in one prepared script for a session that is lent a GPU machine (one H200 for
# ~15 minutes of device time): CUDA tests first (cheap, catch breakage), then the throughput
# benchmarks against transformers in the same run. Each step has its own time limit so one hang
# cannot eat the budget; results land in $OUT (or ./gpu-results) as text files to read back.
#   bash scripts/gpu_checks.sh            # on the device machine, from the repository root
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PY:-python}
if [ ! -x .venv/bin/python ] && ! $PY -c "import torch, transformers" 2>/dev/null; then
  $PY -m pip install -q -e ".[test]" >"$OUT/install.txt" 2>&1
fi
[ -x .venv/bin/python ] && PY=.venv/bin/python
run() {  # run NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s): $*" | tee -a "$OUT/summary.txt"
  timeout "$secs" "$@" >"$OUT/$name.txt" 2>&1
  echo "   exit $? ($(tail -n 1 "$OUT/$name.txt"))" | tee -a "$OUT/summary.txt"
}
$PY - <<'PY' >"$OUT/env.txt" 2>&1
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**30, "GiB")
PY
run cuda_tests 150 $PY -m pytest -q -x -k "cuda or gpu" tests/infer tests/train
run train_1b 150 $PY benchmarks/train_throughput.py gaperon-1b --seq 4096 --micro-batch 4
run decode_1b 120 $PY benchmarks/decode_throughput.py gaperon-1b --hf-static
run train_cli 90 $PY -m torch.distributed.run --nproc-per-node 1 -m gaperon train recipes/quickstart.yaml \
  --out /tmp/gpu-quickstart precision=pure_bf16 device=cuda phases.0.steps=20 phases.1.steps=10
cat "$OUT/summary.txt"

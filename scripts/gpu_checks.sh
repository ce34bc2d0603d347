#!/usr/bin/env bash
# The GPU checks, in one prepared script for a session that is lent a GPU machine (one H100/H200 for
# ~15 minutes of device time, nothing fetchable there): CUDA tests first (cheap, catch breakage), then
# the throughput benchmarks against their peers in the same run, the trainer through torchrun, and
# tokenize scaling on that machine's 16 cores. Each step has its own time limit so one hang cannot
# eat the budget (about 7 minutes expected; the limits add up to 14, so the most useful steps come
# first). Everything lands in two files of $OUT (or ./gpu-results): summary.txt (a line per step)
# and checks.txt (every step's output).
#
# Before the device call, here: `bash scripts/gpu_wheels.sh` (the packages the device image lacks,
# and the eval items, into .gpu/), then run `bash scripts/gpu_checks.sh` there with carry [".gpu"].
# Rehearsal on a CPU machine, in a venv holding only the image's packages (python 3.11 here):
#   PYV=3.11 DEST=/tmp/sim bash scripts/gpu_wheels.sh
#   GPU=/tmp/sim PY=/path/to/that/venv/bin/python DEVICE=cpu SMALL=1 bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-gpu-results}
GPU=${GPU:-.gpu}          # what scripts/gpu_wheels.sh prepared
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}         # 1: tiny shapes, for the CPU rehearsal
mkdir -p "$OUT"
: >"$OUT/summary.txt"
: >"$OUT/checks.txt"
PY=${PY:-python3}         # the device image's python3 holds PyTorch
SITE=/tmp/gaperon-site
if [ -d "$GPU/whl" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$GPU"/whl/*.whl >>"$OUT/checks.txt" 2>&1 || echo "wheel install failed (see checks.txt)" >>"$OUT/summary.txt"
fi
# the checkout itself (not installed there), then the carried wheels, then the image's packages
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export GAPERON_CACHE="$(cd "$GPU" 2>/dev/null && pwd)" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
run() {  # run NAME SECONDS CMD...
  local name=$1 secs=$2 start=$SECONDS; shift 2
  echo "== $name (limit ${secs}s): $*" >>"$OUT/checks.txt"
  timeout "$secs" "$@" >>"$OUT/checks.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
}
if [ "$SMALL" = 1 ]; then
  PRESET=tiny; SEQ=128; MB=2; HS_EVERY=1000; TOK_MB=4; WORKERS="1 2"
else
  PRESET=gaperon-1b; SEQ=4096; MB=4; HS_EVERY=20; TOK_MB=64; WORKERS="1 2 4 8 16"
fi
run env 60 $PY -c "
import os, torch, transformers, tiktoken
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__,
      'tiktoken', tiktoken.__version__, 'cpus', os.cpu_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, p.total_memory // 2**30, 'GiB')
import gaperon.evaluate.lm, gaperon.train.loop, lm_eval, zstandard, orjson, llama_models
print('imports ok')
"
# The CUDA tests (CUDA-graph decode, flex attention choice): the modules that hold them, by name (the
# server's modules need fastapi and openai, which the image lacks).
run cuda_tests 60 $PY -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/infer/test_infer_engine.py \
  tests/train/test_train_parallelize.py
run train_bench 150 $PY benchmarks/train_throughput.py "$PRESET" --seq "$SEQ" --micro-batch "$MB" --steps 10
run decode_bench 100 $PY benchmarks/decode_throughput.py "$PRESET" --hf-static --device "$DEVICE"
# The eval benchmark on a gaperon-1b with random weights (no trained one is installable offline): speed
# and agreement with lm-eval's hf model on the same weights; accuracy is chance level on both sides.
MODEL=/tmp/gaperon-eval-model
run eval_model 60 $PY -c "
import torch
from gaperon.io.hf import save_hf
from gaperon.model import build, get_preset
from gaperon.tokenizer import llama3_tokenizer
m = build(get_preset('$PRESET'), device='meta')
m.to_empty(device='cpu'); m.init_weights(seed=0)
save_hf(m, llama3_tokenizer(), '$MODEL', dtype=torch.float32)
print('wrote $MODEL')
"
run eval_bench 100 $PY benchmarks/eval_throughput.py --model "$MODEL" --device "$DEVICE" \
  --tasks arc_easy,hellaswag --limit 0 --every "$HS_EVERY" --batch-size 32 --threads 8
# The trainer end to end as users run it: tokenize the bundled corpus, then torchrun + pure bf16.
run train_cli 90 bash -c "
for s in fr en code; do
  $PY -m gaperon tokenize data/samples/\$s.jsonl.zst --out /tmp/gpu-tokens/\$s --workers 8 --quiet || exit
done
[ -e data/tokens ] || ln -s /tmp/gpu-tokens data/tokens  # the recipe's mixture reads data/tokens/*
$PY -m torch.distributed.run --nproc-per-node 1 -m gaperon train recipes/quickstart.yaml \
  --out /tmp/gpu-quickstart $([ "$DEVICE" = cuda ] && echo precision=pure_bf16) device=$DEVICE \
  phases.0.steps=20 phases.1.steps=10
rc=\$?; [ -L data/tokens ] && rm data/tokens; exit \$rc
"
# Issue 13's scaling target on more cores than the CI machine has: N workers against 1, on one file
# (block mode) and on 32 files (whole files per worker against blocks of every file).
run tokenize_scaling 100 $PY benchmarks/tokenize_throughput.py --mb "$TOK_MB" --workers $WORKERS --repeat 1
run tokenize_files 100 $PY benchmarks/tokenize_throughput.py --mb "$TOK_MB" --workers $WORKERS --repeat 1 \
  --files 32 --parallel files blocks
# One worker's gap to a bare encode where waking a thread is cheaper than on the 2-core VM (there: ~4.5%
# of GIL waits, benchmarks/RESULTS.md).
run tokenize_gil 60 $PY benchmarks/tokenize_gil_waits.py --mb "$TOK_MB" --repeat 2

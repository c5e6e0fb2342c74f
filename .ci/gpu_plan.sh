#!/usr/bin/env bash
# Run HERE, before a GPU session: builds the folders that a plan's device calls carry and prints the calls.
#   bash .ci/gpu_plan.sh PLAN              PLAN: 05 | 01 | 01+05 | 03+07 (the chapters still without a stored run)
#   bash .ci/gpu_plan.sh PLAN --rehearse   the same plan end to end on THIS machine, in the smoke profile, in an
#                                          emulated GPU image: a Python that sees only the packages the image has
#                                          (../.library/device/KINDS.md, taken from .venv) and wheels for its own
#                                          version. It catches a missing wheel, a too-large call, a staging step
#                                          that does not hand over; not CUDA. REHEARSAL_VENV=DIR takes Python and
#                                          packages from another venv instead of .venv (the device's versions:
#                                          CONTRIBUTING.md, "Plans").
# Each call must follow the previous one within the 30 s a warm machine waits (CONTRIBUTING.md, runbook).
set -euo pipefail
plan=${1:?usage: bash .ci/gpu_plan.sh PLAN [--rehearse]}
mode=${2:-}
# REHEARSAL_VENV counts from the caller's folder: make it absolute before the cd below (it becomes a link)
venv=${REHEARSAL_VENV:-}; [ -z "$venv" ] || venv=$(cd "$venv" 2>/dev/null && pwd || echo "$venv")
root=$(git rev-parse --show-toplevel); cd "$root"
LIMIT_MIB=64
unset PIP_FIND_LINKS; export PIP_CONFIG_FILE=/dev/null   # wheels from PyPI, as on a fresh machine (.ci/run)

calls=()   # "carried folder|device command"
case "$plan" in
  05)    calls=(".gpu|LIMIT=560 bash .ci/gpu_batch.sh notebooks/05_ddpm.ipynb") ;;
  01)    calls=(".gpu-fl/a|bash .ci/gpu_stage.sh .gpu-fl/a" ".gpu-fl/b|bash .ci/gpu_stage.sh .gpu-fl/b"
                ".gpu|LIMIT=560 bash .ci/gpu_batch.sh notebooks/01_fedbabu.ipynb") ;;
  01+05) calls=(".gpu-fl/a|bash .ci/gpu_stage.sh .gpu-fl/a" ".gpu-fl/b|bash .ci/gpu_stage.sh .gpu-fl/b"
                ".gpu|LIMIT=560 bash .ci/gpu_batch.sh notebooks/01_fedbabu.ipynb notebooks/05_ddpm.ipynb") ;;
  03+07) calls=(".gpu-stage|bash .ci/gpu_stage.sh .gpu-stage"
                ".gpu|LIMIT=560 bash .ci/gpu_batch.sh notebooks/03_clip.ipynb notebooks/07_stylespeech.ipynb") ;;
  *) echo "gpu_plan: unknown plan '$plan' (known: 05, 01, 01+05, 03+07)"; exit 2 ;;
esac

build() {   # the carried folders, in the current directory (a checkout of this project)
  local prep=(bash ../shared/gpu/prepare.sh)
  case "$plan" in
    05) "${prep[@]}" FashionMNIST ;;
    01) bash .ci/gpu_flower_wheels.sh && "${prep[@]}" cifar10-jpeg ;;
    01+05)
      bash .ci/gpu_flower_wheels.sh && "${prep[@]}" cifar10-jpeg FashionMNIST
      # 49 MiB of data leave no room for all 19 MiB of the notebook wheels: drop the ones nothing imports when a
      # notebook is executed (the debugger, the completer, the browser extension; the rehearsal runs without them)
      rm -f .gpu/wheels/{debugpy,jedi,parso,widgetsnbextension}-*.whl ;;
    03+07)
      "${prep[@]}" cifar10-jpeg flickr8k
      # the loader reads only the captions and the three split files of Flickr8k_text
      find .gpu/data/flickr8k/Flickr8k_text -type f ! -name Flickr8k.token.txt ! -name 'Flickr_8k.*Images.txt' -delete
      grep -qxF '/.gpu-stage/' .git/info/exclude 2>/dev/null || echo '/.gpu-stage/' >> .git/info/exclude
      rm -rf .gpu-stage && mkdir -p .gpu-stage/data && mv .gpu/wheels .gpu-stage/ && cp -r ../shared/data/speech .gpu-stage/data/ ;;
  esac
  # every call carries the working tree too (tracked and untracked, not ignored) and must stay under 64 MiB
  local tree folder carried
  tree=$(git ls-files -z -co --exclude-standard | du -cm --files0-from=- | tail -n 1 | cut -f1)
  for c in "${calls[@]}"; do
    folder=${c%%|*}; carried=$(du -sm "$folder" | cut -f1)
    if [ $((carried + tree)) -gt $LIMIT_MIB ]; then
      echo "gpu_plan: $folder ($carried MiB) + working tree ($tree MiB) exceeds $LIMIT_MIB MiB"; exit 1
    fi
    echo "carried by one call: $folder $carried MiB + working tree $tree MiB (limit $LIMIT_MIB)"
  done
}

if [ "$mode" != "--rehearse" ]; then
  [ -z "$mode" ] || { echo "gpu_plan: unknown option '$mode'"; exit 2; }
  build
  echo; echo "Plan $plan: device calls, one right after another (run tool; timeout_s 150 for each staging call, 600 for the last):"
  i=1; for c in "${calls[@]}"; do
    echo "  $i. carry [\"${c%%|*}\"]  command: ${c#*|}"; i=$((i + 1))
  done
  exit 0
fi

# ---- rehearsal: the same folders and commands, here, in an emulated image
work=${REHEARSAL_DIR:-/tmp/gpu-rehearsal}
venv=${venv:-$root/.venv}
[ -x "$venv/bin/python" ] || { echo "gpu_plan: no $venv/bin/python (REHEARSAL_VENV names a venv; default .venv)"; exit 1; }
rm -rf "$work" && mkdir -p "$work/tree" "$work/bin" "$work/out"
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -x -C "$work/tree"
ln -s "$venv" "$work/tree/.venv"
ln -s "$(cd .. && pwd)/shared" "$work/shared"
kinds=$(cd .. && pwd)/.library/device/KINDS.md
[ -f "$kinds" ] || { echo "gpu_plan: $kinds not found (it lists the GPU image's packages)"; exit 1; }
# the line "<kinds>: their image, ... Packages: a, b, c." (its list of kinds has changed before: match any nvidia-h*)
{ grep -m1 -E '^nvidia-h[^:]*: their image.*Packages: ' "$kinds" || true; } | sed 's/.*Packages: //; s/\.$//' \
  > "$work/image-packages.txt"
[ -s "$work/image-packages.txt" ] || { echo "gpu_plan: no line 'nvidia-h...: their image ... Packages: ...' in $kinds"; exit 1; }
"$venv/bin/python" - "$work/image-packages.txt" "$work/image-site" <<'PY'
"""A folder of links to .venv's copies of exactly the packages the GPU image has."""
import importlib.metadata as md, pathlib, re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
want = {norm(x.strip()) for x in open(sys.argv[1]).read().split(",") if x.strip()}
out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True)
for dist in md.distributions():
    if norm(dist.metadata["Name"]) not in want:
        continue
    for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] not in ("..", "__pycache__")}:
        src, dst = pathlib.Path(dist.locate_file(top)), out / top
        if src.exists() and not top.endswith(".pth") and not dst.exists():
            dst.symlink_to(src)
PY
base=$("$venv/bin/python" -c 'import sys; print(sys._base_executable)')
pyver=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$base" -m venv --without-pip "$work/py"
echo "$work/image-site" > "$("$work/py/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/image.pth"
printf '#!/bin/sh\nexec %s "$@"\n' "$work/py/bin/python" > "$work/bin/python3" && chmod +x "$work/bin/python3"

cd "$work/tree" && git init -q && PYVER=$pyver build > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
status=0; i=1
for c in "${calls[@]}"; do
  echo "== call $i: carry [\"${c%%|*}\"]: ${c#*|}"
  # shellcheck disable=SC2086
  if ! env -u COURSE_DATA -u PYTHONPATH -u PIP_FIND_LINKS -u STAGE_ROOT PIP_CONFIG_FILE=/dev/null PATH="$work/bin:$PATH" \
       OUT="$work/out/call$i" COURSE_PROFILE=smoke OMP_NUM_THREADS=1 \
       bash -c "${c#*|}" > "$work/out/call$i.txt" 2>&1; then
    status=1; echo "   FAILED:"; tail -n 20 "$work/out/call$i.txt"
  else
    grep -v '^\[\|^   \|nvidia-smi' "$work/out/call$i.txt" | tail -n 6 | sed 's/^/   /'
  fi
  for log in "$work/out/call$i"/*.log; do
    [ -e "$log" ] && [ "$(basename "$log")" != pytest.log ] || continue
    if grep -q '^NOTEBOOK OK' "$log"; then echo "   $(basename "$log"): NOTEBOOK OK"
    else status=1; echo "   $(basename "$log"): did not finish"; tail -n 15 "$log"; fi
  done
  i=$((i + 1))
done
[ $status = 0 ] && echo "rehearsal of plan $plan passed (smoke profile, emulated image, Python $pyver)" \
                || echo "rehearsal of plan $plan FAILED"
exit $status

#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the project root: a *staging* call. A call carries at most 64 MiB, but a
# warm machine keeps ignored files in the project folder between calls (the device tool's README), so what one
# call carries in DIR is kept in $STAGE_ROOT (default .gpu-keep/, git-ignored) for the next ones:
#   DIR/wheels/*.whl  installed into $STAGE_ROOT/site (the notebook stack; gpu_batch.sh then skips its install)
#   DIR/data/*        copied into $STAGE_ROOT/stage (gpu_batch.sh adds its own .gpu/data and reads from there)
#   DIR/part-*        pieces of one tarball of Flower + Ray wheels (.ci/gpu_flower_wheels.sh; DIR/SHA256 holds
#                     the tarball's checksum and the number of pieces). Once all pieces are kept and match the
#                     checksum, they are unpacked and installed into $STAGE_ROOT/site_fl, and Ray is started
#                     once, so a sandbox that refuses it shows here, in seconds.
# Usage: bash .ci/gpu_stage.sh DIR          (the plans that use it: .ci/gpu_plan.sh, CONTRIBUTING.md)
set -euo pipefail
dir=${1:?usage: bash .ci/gpu_stage.sh DIR}
[ -d "$dir" ] || { echo "gpu_stage: no folder $dir here: was it carried?"; exit 1; }
root=${STAGE_ROOT:-$PWD/.gpu-keep}
pip_target() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
did=0
if compgen -G "$dir/wheels/*.whl" > /dev/null; then
  pip_target "$root/site" "$dir"/wheels/*.whl 2>&1 | grep -v "Running pip as the 'root' user" || true
  [ -d "$root/site/nbclient" ] || { echo "gpu_stage: wheel install into $root/site failed"; exit 1; }
  echo "installed $(ls "$dir"/wheels/*.whl | wc -l) wheels into $root/site"; did=1
fi
if [ -d "$dir/data" ]; then
  mkdir -p "$root/stage" && cp -r "$dir/data/." "$root/stage/"
  echo "data kept in $root/stage: $(ls "$root/stage" | tr '\n' ' ')"; did=1
fi
if compgen -G "$dir/part-*" > /dev/null; then
  [ -f "$dir/SHA256" ] || { echo "gpu_stage: $dir has parts but no SHA256 file"; exit 1; }
  mkdir -p "$root/fl" && cp "$dir"/part-* "$root/fl/" && did=1
  read -r want parts < "$dir/SHA256"
  [[ "${parts:-}" =~ ^[0-9]+$ ]] || { echo "gpu_stage: $dir/SHA256 should hold 'CHECKSUM PARTS'"; exit 1; }
  kept=$(ls "$root"/fl/part-* | wc -l)
  if [ "$kept" -lt "$parts" ]; then
    echo "kept Flower parts: $(cd "$root/fl" && ls part-* | tr '\n' ' ')($kept of $parts: carry the next one)"
  elif [ "$(cat "$root"/fl/part-* | sha256sum | cut -d' ' -f1)" != "$want" ]; then
    echo "gpu_stage: the $parts Flower parts in $root/fl do not match $dir/SHA256 (a stale or damaged part?)"; exit 1
  else
    rm -rf "$root/fl/wheels" && cat "$root"/fl/part-* | tar -x -C "$root/fl"
    pip_target "$root/site_fl" "$root"/fl/wheels/*.whl 2>&1 | grep -v "Running pip as the 'root' user" || true
    PYTHONPATH="$root/site_fl${PYTHONPATH:+:$PYTHONPATH}" RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 timeout 90 python3 -c "
import flwr, flwr.simulation, ray
ray.init(num_cpus=2, include_dashboard=False)
print('ray resources:', ray.cluster_resources())
ray.shutdown()
print('flower ok: flwr', flwr.__version__, 'ray', ray.__version__)"
  fi
fi
[ $did = 1 ] || { echo "gpu_stage: $dir holds no wheels/, data/ or part-*: nothing to stage"; exit 1; }

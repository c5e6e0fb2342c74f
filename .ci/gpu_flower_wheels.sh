#!/usr/bin/env bash
# Run HERE (not on the GPU machine), after `make test` has built .venv. Chapter 01's "Scaling out" section
# needs Flower's simulation engine, i.e. flwr and Ray, which the GPU image lacks and whose wheels (Ray
# alone is 74 MB) exceed what one device call may carry (64 MiB). This builds .gpu-fl/a, .gpu-fl/b, ...:
# one tarball of the missing wheels (versions as resolved in .venv, i.e. as CI tests them) split into
# pieces of at most 52 MiB, each folder with the tarball's SHA256 and the number of pieces. One call per folder hands them to
# .ci/gpu_stage.sh on the warm machine, which installs the wheels into .gpu-keep/site_fl once all pieces are
# there. Plans that use it: .ci/gpu_plan.sh (CONTRIBUTING.md, "Plans: more data than one call carries").
# PYVER=3.11 builds wheels for this machine's Python instead (the rehearsal in .ci/gpu_plan.sh --rehearse).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qxF '/.gpu-fl/' .git/info/exclude 2>/dev/null || echo '/.gpu-fl/' >> .git/info/exclude
rm -rf .gpu-fl && mkdir -p .gpu-fl/wheels
# flwr[simulation]'s dependencies that the GPU image does not have (see ../.library/device/KINDS.md; Ray imports
# jsonschema at start-up), plus grpcio, protobuf, click, rich and typer pinned to the versions flwr was tested
# with here (flwr caps their versions; the image's are not known). Not carried: uv, greenlet and
# prompt-toolkit, which flwr lists but its simulation engine does not import (the rehearsal runs without them).
names="flwr ray alembic annotated-types cffi click cryptography fastapi grpcio grpcio-health-checking httptools
       iterators jsonschema jsonschema-specifications mako protobuf pycparser pycryptodome pydantic pydantic-core
       python-dotenv referencing rich rpds-py sqlalchemy starlette tomli tomli-w typer typing-inspection uvicorn
       watchfiles websockets"
pins=$(.venv/bin/python - $names <<'PY'
import importlib.metadata as md, sys
print(" ".join(f"{n}=={md.version(n)}" for n in sys.argv[1:]))
PY
)
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform any -d .gpu-fl/wheels $pins
tar -C .gpu-fl -cf .gpu-fl/fl.tar wheels
sum=$(sha256sum .gpu-fl/fl.tar | cut -d' ' -f1)
split -b 52M .gpu-fl/fl.tar .gpu-fl/part-
n=$(ls .gpu-fl/part-* | wc -l)
for part in .gpu-fl/part-*; do
  folder=.gpu-fl/${part: -1}                        # part-aa -> .gpu-fl/a, part-ab -> .gpu-fl/b, ...
  mkdir -p "$folder" && mv "$part" "$folder/" && echo "$sum $n" > "$folder/SHA256"   # checksum, number of parts
done
rm -rf .gpu-fl/wheels .gpu-fl/fl.tar
du -sh .gpu-fl/*/

#!/usr/bin/env bash
# Run HERE (not on the GPU machine), after `make test` has built .venv. Chapter 01's "Scaling out" section
# needs Flower's simulation engine, i.e. flwr and Ray, which the GPU image lacks and whose wheels (Ray
# alone is 74 MB) exceed what one device call may carry (64 MiB). This builds .gpu-fl/a and .gpu-fl/b:
# one tarball of the missing wheels (versions as resolved in .venv, i.e. as CI tests them) split into two
# halves, carried by two calls that install them into /tmp/site_fl on the warm machine. The recipe is in
# CONTRIBUTING.md ("Chapter 01 on the GPU machine").
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qxF '/.gpu-fl/' .git/info/exclude 2>/dev/null || echo '/.gpu-fl/' >> .git/info/exclude
rm -rf .gpu-fl && mkdir -p .gpu-fl/wheels .gpu-fl/a .gpu-fl/b
# flwr[simulation]'s dependencies that the GPU image does not have (see ../.library/device/KINDS.md), plus
# grpcio and protobuf pinned to the versions flwr was tested with here
names="flwr ray alembic annotated-types cffi cryptography fastapi grpcio grpcio-health-checking httptools
       iterators mako protobuf pycparser pycryptodome pydantic pydantic-core python-dotenv sqlalchemy starlette
       tomli tomli-w typing-inspection uvicorn watchfiles websockets"
pins=$(.venv/bin/python - $names <<'PY'
import importlib.metadata as md, sys
print(" ".join(f"{n}=={md.version(n)}" for n in sys.argv[1:]))
PY
)
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform any -d .gpu-fl/wheels $pins
tar -C .gpu-fl -cf .gpu-fl/fl.tar wheels
split -b 52M .gpu-fl/fl.tar .gpu-fl/part-
[ -e .gpu-fl/part-ac ] && { echo "more than two parts: carry them in more calls"; exit 1; }
mv .gpu-fl/part-aa .gpu-fl/a/ && mv .gpu-fl/part-ab .gpu-fl/b/
rm -rf .gpu-fl/wheels .gpu-fl/fl.tar
du -sh .gpu-fl/a .gpu-fl/b

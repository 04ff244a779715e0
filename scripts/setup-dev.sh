#!/usr/bin/env bash
# Set up a development machine: redis-server (the embedded Redis of `make run` and every
# test's own Redis) and promtool (the alert rule tests) from Debian's packages when run as
# root, then .venv with the project and its dev tools. Afterwards: `make run`, `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup-dev: install ${need[*]} (Debian packages), then run this again" >&2
    exit 1
  fi
fi
make venv
echo "setup-dev: ready; make run (the pod), make test (the suite), make lint"

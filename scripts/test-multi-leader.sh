#!/usr/bin/env bash
# The two-pod demo: two pods on one Redis share the shard leases; the leading sweeper is
# stopped and the other pod takes its shards while notifications keep arriving.
# Uses REDIS_URL when set, else a private redis-server in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
exec make demo-multi

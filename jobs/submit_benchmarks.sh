#!/usr/bin/env bash
# Regenerate the Set5 / Set14 / BSD100 tables on the Ray cluster from cluster.yaml.
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit_benchmarks.sh /mnt/shared/data /mnt/shared/bench [--preset paper]
set -euo pipefail
data=$1 out=$2
shift 2
cd "$(dirname "$0")/.."
. jobs/ray_auth.sh
exec ray job submit --working-dir . -- python3 jobs/benchmark_tables.py --data "$data" --output "$out" "$@"

#!/usr/bin/env bash
# Upscale a dataset on shared storage with the Ray cluster from cluster.yaml (paths as the nodes see them).
#   RAY_ADDRESS=http://HEAD:8265 jobs/submit_upscale.sh /mnt/shared/in /mnt/shared/out --scale 2 [more run options]
set -euo pipefail
in=$1 out=$2
shift 2
cd "$(dirname "$0")/.."
. jobs/ray_auth.sh
exec ray job submit --working-dir . -- python3 jobs/upscale_dataset.py --input "$in" --output "$out" "$@"

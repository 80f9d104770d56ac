"""Ray Job entry point: upscale a dataset from shared storage on the cluster.

Submitted with ``jobs/submit_upscale.sh``; inside a Ray Job, RAY_ADDRESS points
at the cluster, so ``zssr-batch run`` joins it instead of starting its own Ray.
Every argument is passed to ``zssr-batch run`` as it is, e.g.

    python jobs/upscale_dataset.py --input /mnt/shared/photos --output /mnt/shared/photos_x2 --scale 2
"""

import sys

from job_paths import refuse_relative
from zssr_batch.cli import main

if __name__ == "__main__":
    refuse_relative(sys.argv[1:], "upscale_dataset.py")
    sys.exit(main(["run", "--no-progress", *sys.argv[1:]]))

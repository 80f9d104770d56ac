"""zssr-batch: ZSSR ("Zero-Shot" Super-Resolution) for whole image datasets.

The package is five wings; imports go one way, down this list's arrows only::

    cli, config      the command line; typed settings and presets, the size a scale makes (every wing may import config)
    tables           benchmark tables: sets x scales x presets through the command line's run
    run/      ──►    the only wing that imports Ray: run settings, the actor, dispatch over
                     actors, recovery after a worker dies, per-item and per-batch work, faults
    report/   ──►    the row schema, report.csv and summary, curves, thumbnails, plots, report.html
    files/    ──►    decode, encode and atomic writes, folder scans and manifests, weights,
                     degrade (benchmark inputs), samples
    pack/     ──►    K fits at once on one device: options, packed nets and Adam, the step on
                     the device and its CUDA graph, the pack loop, size planning, conv ways, Triton;
                     K kernel estimates at once
    engine/          one image, no I/O, no Ray: resize, kernels, pairs, model, fit, infer,
                     metrics, super_resolve

``run`` imports every wing below it; ``report`` imports ``files`` and ``engine``; ``files``
imports ``engine``; ``pack`` imports ``engine``; ``engine`` imports only ``config``.
``tests/test_layout.py`` checks these arrows.
"""

__version__ = "0.1.0"

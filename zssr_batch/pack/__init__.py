"""K fits, or K kernel estimates, at once on one device, each as it would be alone. Imports
``engine`` and ``config`` only.

- ``loop``: the pack loop (``fit_packed``, ``PackRun``): slots filled, trained, booked, finished;
- ``jobs``: what a pack is given (``Job``) and which jobs may share one;
- ``options``: how a pack runs (``PackOptions``) and the sizes a draining pack shrinks to;
- ``device``: the device side (``DevicePack``): buffers, the step and its CUDA graph, compaction;
- ``kernels``: each slot's own downscaling kernel (``SlotKernels``), so images with different kernels share a pack;
- ``kernel_estimates``: K images' kernels estimated at once (``estimate_packed``), each as alone;
- ``nets``: the packed networks and their slot-wise Adam;
- ``readback``, ``beside``: results brought to the host without waiting; where checks and outputs run;
- ``instruments``: counts and clocks for benchmarks (``PackTimers``), used only when asked for;
- ``size``: how many fits to pack and how; ``conv``, ``triton_conv``, ``triton_adam``: the ways of
  running the convolutions and Adam.
"""

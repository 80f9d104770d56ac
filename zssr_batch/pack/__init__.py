"""K fits at once on one device, each as it would be alone: options, packed networks and Adam,
the step on the device (pairs, forward, backward, Adam) and its CUDA graph, readback, the pack
loop, how many fits to pack and how (size), the ways of running its convolutions (conv, Triton).
Imports ``engine`` and ``config`` only."""

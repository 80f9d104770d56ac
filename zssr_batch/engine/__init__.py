"""One image, no I/O, no Ray: MATLAB-exact resize, kernels, father/son pairs, the network, the
training loop and its learning-rate rule, inference (ensemble, back-projection), scores, and
``super_resolve`` (gradual steps included). Imports only ``config``."""

"""A run over many images: its settings, the Ray actor, dispatch over actors, recovery after a
worker dies, per-item and per-batch work, fault injection. The only wing that imports Ray."""

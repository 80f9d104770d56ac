"""zssr-batch: ZSSR ("Zero-Shot" Super-Resolution) for whole image datasets."""

__version__ = "0.1.0"

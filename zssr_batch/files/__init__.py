"""Files in and out: decode and encode (bit depth, alpha, profiles), atomic writes, what to
upscale (folder scans, manifests), weights, benchmark inputs (degrade) and sample pictures.
Imports ``engine`` (resize) and ``config``."""

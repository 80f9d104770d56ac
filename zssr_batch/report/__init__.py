"""What a run tells its user: the report row, report.csv and summary.csv, each image's curve
and thumbnails, SVG plots, report.html, and the published figures tables compare with.
Imports ``files``, ``engine`` and ``config``."""

"""Paths given to a Ray Job: they are read on the cluster, in a working directory Ray makes for the
job (its uploaded package), so a relative one would name a folder inside that package, which goes
with the job. A Job takes paths as the nodes see them: absolute, or a URL (s3://...)."""

from __future__ import annotations

import sys

PATH_FLAGS = ("--input", "--output", "-o", "--gt", "--kernel", "--config", "--data")


def relative_paths(argv: list[str]) -> list[str]:
    """The values of path flags in ``argv`` that are neither absolute nor URLs."""
    found = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in PATH_FLAGS:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value and not value.startswith("/") and "://" not in value:
                found.append(f"{flag} {value}")
    return found


def refuse_relative(argv: list[str], job: str) -> None:
    """Exit 2 with one line if ``argv`` holds a relative path."""
    bad = relative_paths(argv)
    if bad:
        print(f"{job}: error: {', '.join(bad)}: a Ray Job reads paths on the cluster, in a folder of its own; "
              "give them as the nodes see them (absolute, or s3://...)", file=sys.stderr)
        sys.exit(2)

"""The command line the Python benchmarks share: ``[ROWS] [--runs N]``
and flags (``--json``, ``--pgbulk-only``) read where they are used."""

from __future__ import annotations

import sys


def rows_and_runs(rows: int = 1_000_000, runs: int = 3) -> tuple[int, int]:
    """ROWS (the first argument that is not a flag) and ``--runs N``, or
    the defaults."""
    argv = sys.argv[1:]
    if "--runs" in argv:
        at = argv.index("--runs")
        runs = int(argv[at + 1])
        del argv[at : at + 2]
    counts = [a for a in argv if not a.startswith("--")]
    return (int(counts[0]) if counts else rows), runs

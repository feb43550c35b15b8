"""The ``--sweep`` options of ``detllm check``."""

from __future__ import annotations

import argparse

from ..capture.sweep import SETTINGS  # the table of sweepable settings per backend
from ..diff.model import SWEEP_MODES


def add_sweep_arguments(group: argparse._ArgumentGroup) -> None:
    listed = "; ".join(f"{backend}: {', '.join(table)}" for backend, table in SETTINGS.items())
    group.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help=f"run the baseline again with an engine setting at each value, compared with run 0 (repeatable; {listed}); see docs/sweep.md",
    )
    group.add_argument(
        "--sweep-mode",
        default=SWEEP_MODES[0],
        choices=list(SWEEP_MODES),
        help="one-at-a-time: each swept setting changed alone from the baseline (default); grid: every combination",
    )

"""What the comparison engines read, for the layers that write or copy it.

Capture writes check directories, ``detllm pack`` copies them and the command line names
them; each reads them here as the engines do, so that a file name or a reading rule has one
home: which trace a path names, a row's prompt id, the set of ids seen, a check directory's
plan and determinism record, its replay index and its sweep record.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._aggregate import expand_paths
from ._check import read_determinism, read_plan, recorded_runs
from ._check_replay import REPLAY_INDEX, REPLAYS_DIR, plan_replays, read_index, write_index
from ._locate import locate_trace
from ._rows import prompt_id_of
from ._seen import OneSideIds, SeenIds
from ._sweep import build_sweep_report, read_sweep
from ._sweep_model import SWEEP_FILE

if TYPE_CHECKING:
    from ._replay_report import NotAReplay

__getattr__ = lazy_names(__name__, {"NotAReplay": "._replay_report"})
"""The replay comparison loads when first used: a plain diff never needs it."""

__all__ = [
    "REPLAYS_DIR",
    "REPLAY_INDEX",
    "SWEEP_FILE",
    "NotAReplay",
    "OneSideIds",
    "SeenIds",
    "build_sweep_report",
    "expand_paths",
    "locate_trace",
    "plan_replays",
    "prompt_id_of",
    "read_determinism",
    "read_index",
    "read_plan",
    "read_sweep",
    "recorded_runs",
    "write_index",
]

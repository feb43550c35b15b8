"""The records of every report kind, as the comparison engines return them.

One public home for the types that the renderers (:mod:`detllm.report`), capture and the
command line read: the two-trace diff, the N-way aggregate, the check and its parts (sweep,
concurrency, replay margins), the replay comparison and the bisect document (these two load
when first used). Each is a frozen msgspec Struct, and each report kind is one record that is
its own JSON form (``formats/report-v1.md``): ``DiffReport``, ``AggregateReport``,
``CheckReport``, ``ReplayDocument``, ``BisectDocument``, each with its ``kind``, by which
:mod:`detllm.report` renders it. The modules that define them are private.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ._aggregate_model import (
    AggregateReport,
    AggregateSetup,
    AggregateSummary,
    AggregateVerdict,
    Branch,
    FieldVariation,
    PromptAggregate,
    Split,
    ValueRuns,
    Variant,
)
from ._check_model import (
    CheckComparison,
    CheckDeterminism,
    CheckDivergence,
    CheckPrompt,
    CheckReport,
    CheckRun,
    CheckSettings,
    CheckSummary,
    CheckVerdict,
)
from ._check_replay import CheckReplay, CheckReplayTrace, ReplayFloor, ReplayIndex, ReplayMargin, ReplaySetupMargin
from ._concurrency import ConcurrencyAnswer, ConcurrencyPrompt, LevelRate, Minority
from ._model import (
    CATEGORIES,
    CAUSES,
    CLASSIFICATIONS,
    STATUSES,
    TIER1_FAILURES,
    Attribution,
    Category,
    Divergence,
    Drift,
    Evidence,
    HeaderDifference,
    InputDifference,
    PositionCount,
    Producer,
    PromptResult,
    Setup,
    Side,
    Status,
    Summary,
    Token,
    TopEntry,
    TraceInfo,
    Verdict,
)
from ._report import REPORT_FORMAT, REPORT_VERSION, DiffReport, ReportOptions, TieredVerdict, Version, check_preamble
from ._sweep_model import (
    SWEEP_MODES,
    PrefixCounters,
    PrefixProbe,
    SweepComparison,
    SweepRecord,
    SweepReport,
    SweepTrace,
    SweepVariant,
    SweepVariantRecord,
    SweepVerdict,
)

if TYPE_CHECKING:
    from ._bisect_model import (
        OUTCOMES,
        BisectBudget,
        BisectDocument,
        BisectObserved,
        BisectRun,
        BisectSide,
        BisectVerdict,
        SettingDifference,
    )
    from ._replay import Flip, Statistics
    from ._replay_model import ReplayDocument, ReplayPrompt, ReplaySetupDifference, ReplaySide, ReplayVerdict

_BISECT = ("OUTCOMES", "BisectBudget", "BisectDocument", "BisectObserved", "BisectRun", "BisectSide", "BisectVerdict",
           "SettingDifference")  # fmt: skip
_REPLAY = ("ReplayDocument", "ReplayPrompt", "ReplaySetupDifference", "ReplaySide", "ReplayVerdict")
__getattr__ = lazy_names(
    __name__,
    {
        **dict.fromkeys(_BISECT, "._bisect_model"),
        **dict.fromkeys(_REPLAY, "._replay_model"),
        "Flip": "._replay",
        "Statistics": "._replay",
    },
)
"""The replay and bisect records load when first used: a plain diff never meets them."""

__all__ = [
    "CATEGORIES",
    "CAUSES",
    "CLASSIFICATIONS",
    "OUTCOMES",
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "STATUSES",
    "SWEEP_MODES",
    "TIER1_FAILURES",
    "AggregateReport",
    "AggregateSetup",
    "AggregateSummary",
    "AggregateVerdict",
    "Attribution",
    "BisectBudget",
    "BisectDocument",
    "BisectObserved",
    "BisectRun",
    "BisectSide",
    "BisectVerdict",
    "Branch",
    "Category",
    "CheckComparison",
    "CheckDeterminism",
    "CheckDivergence",
    "CheckPrompt",
    "CheckReplay",
    "CheckReplayTrace",
    "CheckReport",
    "CheckRun",
    "CheckSettings",
    "CheckSummary",
    "CheckVerdict",
    "ConcurrencyAnswer",
    "ConcurrencyPrompt",
    "DiffReport",
    "Divergence",
    "Drift",
    "Evidence",
    "FieldVariation",
    "Flip",
    "HeaderDifference",
    "InputDifference",
    "LevelRate",
    "Minority",
    "PositionCount",
    "PrefixCounters",
    "PrefixProbe",
    "Producer",
    "PromptAggregate",
    "PromptResult",
    "ReplayDocument",
    "ReplayFloor",
    "ReplayIndex",
    "ReplayMargin",
    "ReplayPrompt",
    "ReplaySetupDifference",
    "ReplaySetupMargin",
    "ReplaySide",
    "ReplayVerdict",
    "ReportOptions",
    "SettingDifference",
    "Setup",
    "Side",
    "Split",
    "Statistics",
    "Status",
    "Summary",
    "SweepComparison",
    "SweepRecord",
    "SweepReport",
    "SweepTrace",
    "SweepVariant",
    "SweepVariantRecord",
    "SweepVerdict",
    "TieredVerdict",
    "Token",
    "TopEntry",
    "TraceInfo",
    "ValueRuns",
    "Variant",
    "Verdict",
    "Version",
    "check_preamble",
]

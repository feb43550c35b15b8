"""The options of a comparison, with the thresholds that classify divergences."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._flags import Flag, add_flags, arguments_of, values_from
from ..errors import UsageError

NOISE_FLOORS: dict[str, float] = {
    "float64": 2.0**4 * 2.0**-52,
    "float32": 2.0**4 * 2.0**-23,
    "float16": 2.0**4 * 2.0**-10,
    "bfloat16": 2.0**4 * 2.0**-7,
}
"""The smallest noise level assumed for each dtype: the spacing of representable
numbers at magnitude 16, a typical size for a logit. It stands in for the observed
drift when the logprobs before a flip agree bit for bit (or there are none)."""

DEFAULT_NOISE_FLOOR = NOISE_FLOORS["float32"]
"""The floor for a dtype this table does not know."""

_DTYPE_ALIASES = {
    "fp64": "float64",
    "double": "float64",
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}


def noise_floor_for(dtype: str) -> float | None:
    """The noise floor of a dtype name such as ``bfloat16`` or ``torch.float16``."""
    name = dtype.strip().lower().removeprefix("torch.")
    return NOISE_FLOORS.get(_DTYPE_ALIASES.get(name, name))


@dataclass(frozen=True)
class DiffOptions:
    """How to compare two traces and how to classify what differs.

    ``tier``: 1 fails on token differences only; 2 also on logprob differences.
    ``atol``: logprobs within this absolute difference count as equal (0: bitwise).
    ``near_tie_factor``: a flip is a near tie when the gap between the two tokens
    (how much each side preferred its own token, added) is at most this factor times
    the noise level. The noise level is the largest |delta logprob| seen before the
    flip, or the dtype's noise floor when that is smaller.
    ``noise_floor``: overrides the per-dtype floor (:data:`NOISE_FLOORS`).
    ``context_tokens`` / ``continuation_tokens``: how many tokens of common context
    and of each side's continuation a divergence records.
    ``allow_incomplete``: compare traces without a footer (their complete rows).
    ``buffer_bytes``: memory for rows waiting for their match when the two traces
    list prompts in different orders; beyond it they go to a temporary file.
    ``workers``: processes that analyse differing rows. 1 keeps everything in the
    calling process; more forks worker processes (where the platform can fork); 0
    chooses: 2 for traces of 64 MB or more together when the machine has a core to
    spare (its load average leaves one free), else 1.
    Neither ``buffer_bytes`` nor ``workers`` changes a finding.
    """

    tier: int = 1
    atol: float = 0.0
    near_tie_factor: float = 4.0
    noise_floor: float | None = None
    context_tokens: int = 8
    continuation_tokens: int = 8
    allow_incomplete: bool = False
    buffer_bytes: int = 32 * 1024 * 1024
    workers: int = 1

    def __post_init__(self) -> None:
        if self.tier not in (1, 2):
            raise UsageError(f"tier must be 1 or 2, got {self.tier!r}")
        if not self.atol >= 0:
            raise UsageError(f"atol must be a number >= 0, got {self.atol!r}")
        if not self.near_tie_factor > 0:
            raise UsageError(f"near_tie_factor must be a number > 0, got {self.near_tie_factor!r}")
        if self.noise_floor is not None and not self.noise_floor >= 0:
            raise UsageError(f"noise_floor must be a number >= 0, got {self.noise_floor!r}")
        for name in ("context_tokens", "continuation_tokens"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.buffer_bytes < 0:
            raise UsageError(f"buffer_bytes must be >= 0, got {self.buffer_bytes!r}")
        if self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers!r}")

    def replace(self, **changes: object) -> DiffOptions:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """The options that shape a report's findings (``buffer_bytes`` and ``workers`` do not)."""
        return {
            "tier": self.tier,
            "atol": self.atol,
            "near_tie_factor": self.near_tie_factor,
            "noise_floor": self.noise_floor,
            "context_tokens": self.context_tokens,
            "continuation_tokens": self.continuation_tokens,
            "allow_incomplete": self.allow_incomplete,
        }


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DiffOptions)}

COMPARISON_FLAGS: tuple[Flag, ...] = (
    Flag("tier", "--tier", int, None,
         "1: fail on token differences only (default); 2: also on logprob differences", choices=(1, 2)),
    Flag("atol", "--atol", float, "X", "logprobs within X count as equal at Tier 2 (default 0: bitwise)"),
    Flag("near_tie_factor", "--near-tie-factor", float, "F",
         "a flip is a near tie when its gap is at most F x the noise (default %(default)g)"),
    Flag("noise_floor", "--noise-floor", float, "X", "the smallest noise level assumed (default: by dtype, see docs/diff.md)"),
    Flag("context_tokens", "--context", int, "N", "tokens of common context kept at a divergence (default %(default)s)"),
    Flag("continuation_tokens", "--continuation", int, "N", "tokens of each side's continuation kept (default %(default)s)"),
    Flag("allow_incomplete", "--allow-incomplete", None, None,
         "read traces without a footer (a run that did not finish); the report says so"),
    Flag("workers", "--workers", int, "N",
         "processes hashing and analysing rows (default 0: 2 for large traces when a core is free, else 1)", default=0),
)  # fmt: skip
"""Every comparison flag, in the order a command line names them. ``buffer_bytes`` has none."""

FINDINGS_FIELDS = tuple(f.field for f in COMPARISON_FLAGS if f.field in DiffOptions().to_dict())
"""The fields whose flags a "how to reproduce" command repeats: those that shape the findings."""

CHECK_FIELDS = ("tier", "atol")
"""The comparison settings ``check`` and ``bisect`` take (a check's ``run_config.json`` records them)."""


def add_comparison_flags(
    parser: Any,
    fields: Sequence[str] | None = None,
    *,
    help: Mapping[str, str] | None = None,
    defaults: Mapping[str, object] | None = None,
) -> None:
    """Add the flags of ``fields`` (default: all) to an argparse parser or group, each stored
    under its field's name. ``help`` and ``defaults`` reword or change a flag for one command
    (a None default means "not given": :func:`options_from` then keeps the field's default)."""
    chosen = [f for f in COMPARISON_FLAGS if fields is None or f.field in fields]
    add_flags(parser, chosen, _DEFAULTS, help=help, defaults=defaults)


def options_from(args: object, base: DiffOptions | None = None) -> DiffOptions:
    """The options the comparison flags of a parsed command line give (fields whose flag the
    command does not take, or that were left None, keep ``base``'s value)."""
    return (base or DiffOptions()).replace(**values_from(args, COMPARISON_FLAGS))


def comparison_arguments(
    options: DiffOptions, fields: Sequence[str] = FINDINGS_FIELDS, *, keep: Sequence[str] = ()
) -> list[str]:
    """The flags that give ``options`` back, for the ``fields`` a command takes: only the values
    that differ from the flag's default (``keep``: named even at their default), in table order."""
    return arguments_of(options, [f for f in COMPARISON_FLAGS if f.field in fields], _DEFAULTS, keep=keep)

"""The diff report: what :func:`~detllm.diff.diff_traces` returns."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from .._version import __version__
from ..errors import ExitCode, TraceFormatError, UsageError
from .._json_errors import explain_validation
from ._model import (
    PromptResult,
    Producer,
    Setup,
    Summary,
    TraceInfo,
    Verdict,
)
from ._options import DiffOptions
from ._results import PromptResults

REPORT_FORMAT = "detllm.report"
REPORT_VERSION = "1.1"
"""1.1 added ``attribution.settings`` (the differing factors by name)."""
SUPPORTED_MAJOR = 1

Version = Annotated[str, msgspec.Meta(pattern=r"^1\.[0-9]+$")]


class ReportOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The options that shaped the findings (see :class:`~detllm.diff.DiffOptions`)."""

    tier: Literal[1, 2]
    atol: float
    near_tie_factor: float
    noise_floor: float | None
    context_tokens: int
    continuation_tokens: int
    allow_incomplete: bool

    @classmethod
    def of(cls, options: DiffOptions) -> ReportOptions:
        return msgspec.convert(options.to_dict(), cls)

    def to_options(self) -> DiffOptions:
        return DiffOptions(**msgspec.to_builtins(self))


class DiffDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON form of a diff report (``kind: "diff"``)."""

    format: Literal["detllm.report"]
    version: Version
    kind: Literal["diff"]
    producer: Producer
    options: ReportOptions
    left: TraceInfo
    right: TraceInfo
    setup: Setup
    verdict: Verdict
    summary: Summary
    notes: list[str]
    prompts: list[PromptResult]


class TieredVerdict:
    """Tier results of a report that has ``options.tier`` and ``verdict.tier1/tier2``."""

    __slots__ = ()  # a mixin of msgspec Structs too

    options: DiffOptions
    verdict: Any

    @property
    def classification(self) -> str:
        """The overall classification: the most serious one among the prompts."""
        return str(self.verdict.classification)

    def passed(self, tier: int | None = None) -> bool:
        """Whether the traces agree at ``tier`` (default: the report's tier)."""
        tier = self.options.tier if tier is None else tier
        if tier == 1:
            return bool(self.verdict.tier1)
        if tier == 2:
            return self.verdict.tier2 is True
        raise UsageError(f"tier must be 1 or 2, got {tier!r}")

    def at_tier(self, tier: int) -> Any:
        """The same report, judged at ``tier``."""
        return dataclasses.replace(self, options=self.options.replace(tier=tier))  # type: ignore[type-var]

    def exit_code(self, tier: int | None = None) -> int:
        """0 when the traces agree at ``tier``, 1 when they do not, 2 when it cannot be told."""
        tier = self.options.tier if tier is None else tier
        if tier == 2 and self.verdict.tier2 is None:
            return int(ExitCode.TROUBLE)
        return int(ExitCode.OK if self.passed(tier) else ExitCode.DIFFERENT)


@dataclass(frozen=True, eq=False)
class DiffReport(TieredVerdict):
    """The comparison of two traces.

    ``prompts`` holds every prompt's result (identical ones included) in the left
    trace's order, then the prompts only the right trace has. It can be longer than
    memory allows: it reads its entries from a temporary file when it must.
    """

    left: TraceInfo
    right: TraceInfo
    options: DiffOptions
    setup: Setup
    verdict: Verdict
    summary: Summary
    prompts: PromptResults
    notes: tuple[str, ...] = ()
    producer: Producer = field(default_factory=lambda: Producer(name="detllm", version=__version__))

    kind = "diff"

    def diverging(self) -> Iterator[PromptResult]:
        """The prompts whose result is not ``identical``."""
        for result in self.prompts:
            if result.status != "identical":
                yield result

    def document(self, *, with_prompts: bool = True) -> DiffDocument:
        return DiffDocument(
            format=REPORT_FORMAT,
            version=REPORT_VERSION,
            kind="diff",
            producer=self.producer,
            options=ReportOptions.of(self.options),
            left=self.left,
            right=self.right,
            setup=self.setup,
            verdict=self.verdict,
            summary=self.summary,
            notes=list(self.notes),
            prompts=list(self.prompts) if with_prompts else [],
        )

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON report as plain Python objects (see ``formats/report-v1.md``)."""
        return msgspec.to_builtins(self.document())  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any, *, path: str | os.PathLike[str] = "<report>") -> DiffReport:
        """Rebuild a report from :meth:`to_dict`'s output (or a saved ``report.json``)."""
        document = convert_document(data, DiffDocument, "diff", os.fspath(path))
        return cls(
            left=document.left,
            right=document.right,
            options=document.options.to_options(),
            setup=document.setup,
            verdict=document.verdict,
            summary=document.summary,
            prompts=PromptResults.of(document.prompts),
            notes=tuple(document.notes),
            producer=document.producer,
        )


def check_preamble(data: Any, path: str, kinds: tuple[str, ...]) -> str:
    """Check a report's format, version and kind; return the kind."""
    if not isinstance(data, dict):
        raise TraceFormatError(path, 1, "-", "a report is a JSON object")
    if data.get("format") != REPORT_FORMAT:
        raise TraceFormatError(path, 1, "format", f"expected {REPORT_FORMAT!r}, got {data.get('format')!r}")
    version = data.get("version")
    major = version.split(".", 1)[0] if isinstance(version, str) else None
    if major is None or not major.isdigit():
        raise TraceFormatError(path, 1, "version", f"expected 'MAJOR.MINOR', got {version!r}")
    if int(major) != SUPPORTED_MAJOR:
        raise TraceFormatError(
            path, 1, "version", f"major version {major} is not supported (this detLLM reads {SUPPORTED_MAJOR}.x reports)"
        )
    kind = data.get("kind")
    if kind not in kinds:
        raise TraceFormatError(path, 1, "kind", f"expected one of {', '.join(map(repr, kinds))}, got {kind!r}")
    return str(kind)


def convert_document(data: Any, type_: type[Any], kind: str, path: str) -> Any:
    """Check the preamble, then decode ``data`` as ``type_``; errors name the field."""
    check_preamble(data, path, (kind,))
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        field, problem = explain_validation(str(exc))
        raise TraceFormatError(path, 1, field, problem) from None

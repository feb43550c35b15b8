"""The diff report: what :func:`~detllm.diff.diff_traces` returns."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar

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

REPORT_FORMAT = "detllm.report"
REPORT_VERSION = "1.2"
"""1.1 added ``attribution.settings`` (the differing factors by name); 1.2 the sweep
comparison's ``scheduled_steps``."""
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


Record = TypeVar("Record", bound="ReportRecord")


class ReportRecord:
    """What a report record of format 1 does besides holding its fields: it is made with
    :meth:`of`, judged again at another tier, and turned into plain JSON objects and back.
    ``KIND`` is the record's ``kind``. A mixin of the msgspec Structs of the report kinds."""

    __slots__ = ()

    KIND: ClassVar[str]
    options: ReportOptions

    @classmethod
    def of(cls: type[Record], options: DiffOptions, **parts: Any) -> Record:
        """A report of this detLLM, made with ``options``; ``parts``: the other fields."""
        parts.setdefault("producer", Producer(name="detllm", version=__version__))
        return cls(format=REPORT_FORMAT, version=REPORT_VERSION, kind=cls.KIND,  # type: ignore[call-arg]
                   options=ReportOptions.of(options), **parts)

    def at_tier(self: Record, tier: int) -> Record:
        """The same report, judged at ``tier``."""
        return msgspec.structs.replace(self, options=msgspec.structs.replace(self.options, tier=tier))  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON report as plain Python objects (see ``formats/report-v1.md``)."""
        return msgspec.to_builtins(self, enc_hook=prompts_as_list)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls: type[Record], data: Any, *, path: str | os.PathLike[str] = "<report>") -> Record:
        """Rebuild a report from :meth:`to_dict`'s output (or a saved ``report.json``)."""
        return convert_document(data, cls, cls.KIND, os.fspath(path))  # type: ignore[no-any-return]


class TieredVerdict:
    """Tier results of a report that has ``options.tier`` and ``verdict.tier1/tier2``."""

    __slots__ = ()  # a mixin of msgspec Structs too

    options: ReportOptions
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

    def exit_code(self, tier: int | None = None) -> int:
        """0 when the traces agree at ``tier``, 1 when they do not, 2 when it cannot be told."""
        tier = self.options.tier if tier is None else tier
        if tier == 2 and self.verdict.tier2 is None:
            return int(ExitCode.TROUBLE)
        return int(ExitCode.OK if self.passed(tier) else ExitCode.DIFFERENT)


class DiffReport(msgspec.Struct, ReportRecord, TieredVerdict, frozen=True, kw_only=True):
    """The JSON form of a diff report (``kind: "diff"``)."""

    # A diff report is one record: what diff_traces returns (the comparison of two traces),
    # what the renderers read and what ``report.json`` holds, its fields in the document's
    # order. ``prompts`` holds every prompt's result (identical ones included) in the left
    # trace's order, then the prompts only the right trace has; the engine's can be longer
    # than memory allows (it reads its entries from a temporary file when it must), a loaded
    # report's is a list. Either encodes as the list (:func:`prompts_as_list`).

    KIND = "diff"

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
    prompts: Sequence[PromptResult]

    def diverging(self) -> Iterator[PromptResult]:
        """The prompts whose result is not ``identical``."""
        for result in self.prompts:
            if result.status != "identical":
                yield result


def prompts_as_list(value: Any) -> Any:
    """An ``enc_hook`` for msgspec: an engine's compact or disk-backed sequence of prompts, as a list."""
    if isinstance(value, Sequence):
        return list(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


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

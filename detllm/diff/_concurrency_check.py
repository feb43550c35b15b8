"""Joining the concurrency answer to a check report's verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ._aggregate_model import AggregateReport
from ._check_model import CheckComparison, CheckVerdict
from ._concurrency import ConcurrencyAnswer, concurrency_answer


def with_concurrency(
    aggregate: AggregateReport, planned: Sequence[Any], comparisons: list[CheckComparison], verdict: CheckVerdict
) -> tuple[ConcurrencyAnswer, CheckVerdict]:
    """The concurrency answer of a server check, and the verdict that includes it."""
    asked = [c for c in comparisons if c.question in ("concurrency", "repeat")]
    logprobs = None if any(c.tier2 is None for c in asked) else all(c.tier2 for c in asked)
    answer = concurrency_answer(aggregate, [r.name for r in planned], [r.concurrency for r in planned], logprobs)
    verdict = msgspec.structs.replace(
        verdict,
        concurrency_invariant=answer.invariant,
        concurrency_invariant_logprobs=answer.invariant_logprobs,
        text=f"{verdict.text} {answer.text}",
    )
    return answer, verdict

"""The interface every inference backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..trace import Artifact, Decoding, Row, Software

LogprobMode = Literal["raw", "processed"]


@dataclass(frozen=True)
class Prompt:
    """One input: an id unique within a run, and its text or its token ids."""

    id: str
    text: str | None = None
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BackendDescription:
    """What a backend tells the trace header about itself and the loaded model."""

    backend: Software
    model: Artifact
    tokenizer: Artifact
    dtype: str
    device: str
    settings: dict[str, Any] = field(default_factory=dict)
    """Everything else that changes numerics (attention implementation, engine options)."""


class Backend(Protocol):
    """A loaded model that generates one batch at a time.

    A backend is created once and reused for every repeat and batch size of a check.
    """

    name: str

    def describe(self) -> BackendDescription:
        """The header facts about this backend and its model."""
        ...

    def resolve_decoding(self, decoding: Decoding) -> Decoding:
        """The decoding settings as the backend will really apply them.

        Raises :class:`~detllm.errors.CaptureError` for a setting the backend cannot
        honour, rather than recording a label it ignored.
        """
        ...

    def generate(
        self,
        batch: Sequence[Prompt],
        decoding: Decoding,
        *,
        top_k: int,
        logprob_mode: LogprobMode,
    ) -> list[Row]:
        """Generate for exactly these prompts, together as one batch.

        Returns one row per prompt, in order, with ``batch`` placement left for the
        caller to fill in.
        """
        ...

    def close(self) -> None:
        """Release the model and any engine processes."""
        ...

"""The interface every inference backend implements."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import CaptureError
from ..rundir import Prompt as Prompt  # the record lives with the run directory format
from ..trace import Artifact, Decoding, Row, Software

LogprobMode = Literal["raw", "processed"]


def row_seed(seed: int, prompt_id: str) -> int:
    """The sampling seed of one prompt, the same in every backend: each prompt draws
    from its own generator, so its draws depend on the seed and its id, not on its
    neighbours in the batch."""
    digest = hashlib.sha256(f"{seed}\0{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
    splits_batches: bool = False
    """The engine may spread a batch over several scheduler steps (chunked prefill under
    a token budget per step): its rows then say in which step each was first scheduled
    (``Placement.step``, trace version 1.2)."""


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
        caller to fill in; only a backend that ``splits_batches`` sets it, to a placement
        whose ``step`` the caller keeps.
        """
        ...

    def close(self) -> None:
        """Release the model and any engine processes."""
        ...


def resolve_decoding(
    decoding: Decoding, backend: str, *, min_temperature: float | None = None, temperature_note: str = ""
) -> Decoding:
    """The checks every backend makes of decoding settings, and the settings as they apply.

    A setting the decoding would ignore (a temperature without sampling) is an error,
    as is sampling without a seed. ``min_temperature``: the lowest temperature the
    backend samples at (None: any above 0), with ``temperature_note`` saying why.
    """
    if decoding.extra:
        name = sorted(decoding.extra)[0]
        raise CaptureError(f"the {backend} backend does not support the decoding setting {name!r}")
    if decoding.max_new_tokens < 1:
        raise CaptureError(f"max_new_tokens must be at least 1, got {decoding.max_new_tokens}")
    if not decoding.do_sample:
        for name, value, default in (
            ("temperature", decoding.temperature, 1.0),
            ("top_p", decoding.top_p, 1.0),
            ("top_k", decoding.top_k, 0),
        ):
            if value != default:
                raise CaptureError(
                    f"greedy decoding ignores {name}={value!r}: turn sampling on (do_sample) or leave {name} at {default!r}"
                )
        return Decoding(do_sample=False, max_new_tokens=decoding.max_new_tokens)
    temperature = decoding.temperature
    if min_temperature is None:
        ok, needed = math.isfinite(temperature) and temperature > 0, "> 0"
    else:
        ok, needed = math.isfinite(temperature) and temperature >= min_temperature, f"of at least {min_temperature:g}"
    if not ok:
        note = f"{temperature_note}; " if temperature_note else ""
        raise CaptureError(
            f"sampling needs a temperature {needed}, got {temperature!r} ({note}for greedy decoding turn sampling off)"
        )
    if not 0 < decoding.top_p <= 1:
        raise CaptureError(f"top_p must be in (0, 1], got {decoding.top_p!r}")
    if decoding.top_k < 0:
        raise CaptureError(f"top_k must be >= 0 (0 turns it off), got {decoding.top_k!r}")
    if decoding.seed is None:
        raise CaptureError("sampling needs a seed: unseeded sampling cannot be repeated")
    return Decoding(
        do_sample=True,
        temperature=float(temperature),
        top_p=float(decoding.top_p),
        top_k=decoding.top_k,
        max_new_tokens=decoding.max_new_tokens,
        seed=decoding.seed,
    )


@dataclass(frozen=True)
class ForcedSequence:
    """One row to replay: its input ids, then the tokens a run generated, fed as given."""

    prompt_id: str
    input_ids: tuple[int, ...]
    forced_ids: tuple[int, ...]


@dataclass(frozen=True)
class ForcedStep:
    """What a setup computes at one forced position, for the token that stands there."""

    logprob: float
    """The forced token's logprob under this setup."""
    rank: int
    """Its rank under this setup: 1 is the token greedy decoding would choose."""
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    """The setup's own top-k at this position, best first."""


class Scorer(Protocol):
    """A backend that can replay recorded tokens (teacher forcing) instead of generating."""

    def score(self, batch: Sequence[ForcedSequence], *, top_k: int) -> list[list[ForcedStep]]:
        """For each sequence, one :class:`ForcedStep` per forced token, in order.

        Raises :class:`~detllm.errors.CaptureError` where the backend cannot replay.
        """
        ...

"""Replay-backed verdicts of a check (``detllm check --replay``), judged offline.

At each first divergence between run 0 (the left side) and run N (the right side),
the two runs share the prefix up to the divergent step, where run 0 chose token ``a``
and run N token ``b``. The capture side replays (teacher forcing) both runs' rows
under both setups: run 0's rows and run N's rows under run 0's setup, and under run
N's setup, each at its setup's batch size and composition. Under one setup, the
forced logprobs of ``a`` (from run 0's row) and ``b`` (from run N's row) at that step
are the setup's numbers for the two tokens at the same prefix: their difference is the
margin, measured rather than read off each side's own top-k.

A replay under a run's own setup is not bit-identical to what decoding computed
(prefill and decode kernels differ): the largest such difference over the replayed
rows, per setup, is the noise floor of the replay comparisons.

Everything here reads files only: ``replays/replays.json`` lists the replay traces,
so ``detllm report CHECK_DIR`` judges them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
import orjson

from ._options import DiffOptions
from .._numbers import count, num
from ..errors import InputError
from ..reader import open_trace
from ..rundir import read_document
from ..trace import Row

if TYPE_CHECKING:
    from ._check_model import CheckComparison, CheckPrompt, CheckRun

REPLAYS_DIR = "replays"
REPLAY_INDEX = f"{REPLAYS_DIR}/replays.json"
INDEX_FORMAT = "detllm.check_replays"

ReplayVerdict = Literal["near_tie", "flip_confirmed", "not_reproduced"]


class _Struct(msgspec.Struct, frozen=True, kw_only=True):
    pass


class CheckReplayTrace(_Struct):
    """One replay trace of the check: a run's rows forced under a run's setup."""

    name: str
    path: str
    """Relative to the check directory."""
    source: str
    """The run whose tokens were forced."""
    setup: str
    """The run whose setup (batch size, composition) the replay stands for."""
    batch_size: int
    composition: str
    prompts: list[str]
    """The diverging prompts it was made for; the trace also holds their batch-mates."""
    rows: int
    """Rows replayed: those prompts and their batch-mates in the setup's batches."""
    scheduled: list[int] | None = None
    """Per replayed batch, the engine steps over which its sequences were first scheduled
    (vLLM: 1 when the batch was scored as one batch, more when the engine split it, 0 when it
    reported no scheduling times); None
    when the backend scores a batch in one forward pass by construction (hf)."""

    def split(self) -> int:
        """Replayed batches the engine did not schedule as one batch."""
        return sum(1 for steps in self.scheduled or [] if steps != 1)


class ReplayFloor(_Struct):
    """A run replayed under its own setup: forced logprobs against the decoded ones."""

    setup: str
    replay: str
    compared: int
    """Tokens compared."""
    max_abs: float
    mean_abs: float
    rank1: int
    """Tokens the replay puts at rank 1 (greedy decoding would choose them again)."""


class ReplaySetupMargin(_Struct):
    """One setup's numbers for the two divergent tokens at the shared prefix."""

    setup: str
    batch_size: int
    composition: str
    left_logprob: float
    """Of run 0's token, from run 0's row replayed under this setup."""
    right_logprob: float
    """Of run N's token, from run N's row replayed under this setup."""
    margin: float
    """``left_logprob - right_logprob``: > 0 when this setup prefers run 0's token."""
    left_rank: int | None
    right_rank: int | None


class ReplayMargin(_Struct):
    """A first divergence, measured by replay under both setups."""

    comparison: int
    """Index into the report's ``comparisons``."""
    prompt_id: str
    index: int
    left_token: int
    right_token: int
    left_setup: ReplaySetupMargin
    """Under run 0's setup."""
    right_setup: ReplaySetupMargin
    """Under run N's setup."""
    inferred_left_lead: float | None
    """The engine's inference from the decoded top-k: run 0's lead of its token (null when not recorded)."""
    inferred_right_lead: float | None
    noise: float
    """The larger of the two setups' noise floors."""
    tolerance: float
    """``near_tie_factor x noise``."""
    inferred: str
    """The engine's classification of the prompt in this comparison, for contrast."""
    verdict: ReplayVerdict
    """``near_tie``: both margins within the tolerance; ``flip_confirmed``: each setup,
    replayed, prefers its own run's token, one of them beyond the tolerance;
    ``not_reproduced``: a setup, replayed, prefers the other run's token beyond the tolerance."""
    text: str


class CheckReplay(_Struct):
    """The ``replay`` member of a check report: what replay measured at each divergence."""

    replays: list[CheckReplayTrace]
    floors: list[ReplayFloor]
    margins: list[ReplayMargin]
    unmeasured: list[str]
    """``prompt_id`` (run name) of divergences no replay measures: a side stopped, or a replay is missing."""
    text: str


class ReplayIndex(_Struct):
    """``replays/replays.json``."""

    format: Literal["detllm.check_replays"]
    version: str
    """``MAJOR.MINOR``; a reader takes every 1.x (a newer minor adds members it ignores)."""
    replays: list[CheckReplayTrace]


def replay_name(source: str, setup: str) -> str:
    """``bs8-in-order@bs1-run0``: ``source``'s tokens under ``setup``'s setup."""
    return f"{source}@{setup}"


def divergent_steps(prompts: Sequence[CheckPrompt]) -> list[tuple[int, str, int]]:
    """``(comparison, prompt_id, index)`` of every first divergence where both sides have a token."""
    found = []
    for prompt in prompts:
        for d in prompt.divergences:
            div = d.result.divergence
            if div is not None and div.left.token is not None and div.right.token is not None:
                found.append((d.comparison, prompt.prompt_id, div.index))
    return found


def plan_replays(runs: Sequence[CheckRun], comparisons: Sequence[CheckComparison], prompts: Sequence[CheckPrompt]) -> list[CheckReplayTrace]:
    """The replays that measure every divergence: for each pair (run 0, run N), both runs
    under both setups; run 0 under its own setup once, for every diverging prompt."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for comparison, pid, _ in divergent_steps(prompts):
        c = comparisons[comparison]
        left, right = runs[c.left], runs[c.right]
        for source in (left, right):
            for setup in (left, right):
                pids = wanted.setdefault((source.name, setup.name), [])
                if pid not in pids:
                    pids.append(pid)
    by_name = {r.name: r for r in runs}
    planned = []
    for (source, setup), pids in wanted.items():
        name = replay_name(source, setup)
        run = by_name[setup]
        planned.append(CheckReplayTrace(name=name, path=f"{REPLAYS_DIR}/{name}.jsonl", source=source, setup=setup,
                                        batch_size=run.batch_size, composition=run.composition, prompts=pids, rows=0))
    return planned


def write_index(directory: Path, replays: Sequence[CheckReplayTrace]) -> None:
    index = ReplayIndex(format=INDEX_FORMAT, version="1.0", replays=list(replays))
    (directory / REPLAY_INDEX).write_bytes(orjson.dumps(msgspec.to_builtins(index), option=orjson.OPT_INDENT_2) + b"\n")


def read_index(directory: Path) -> list[CheckReplayTrace] | None:
    """The check's replay traces, or None when the check was not replayed."""
    index = read_document(directory / REPLAY_INDEX, INDEX_FORMAT, ReplayIndex)
    return None if index is None else index.replays


def _rows(path: Path) -> dict[str, Row]:
    if not path.is_file():
        raise InputError(f"{path}: no such file (listed in {REPLAY_INDEX})")
    with open_trace(path) as reader:
        return {row.prompt_id: row for row in reader}


def build_check_replay(
    directory: Path,
    runs: Sequence[CheckRun],
    comparisons: Sequence[CheckComparison],
    prompts: Sequence[CheckPrompt],
    options: DiffOptions,
) -> CheckReplay | None:
    """The replay member, from ``replays/``; None when the check was not replayed."""
    replays = read_index(directory)
    if replays is None:
        return None
    by_pair = {(r.source, r.setup): r for r in replays}
    by_run = {r.name: r for r in runs}
    loaded: dict[str, dict[str, Row]] = {}

    def rows_of(path: str) -> dict[str, Row]:
        if path not in loaded:
            loaded[path] = _rows(directory / path)
        return loaded[path]

    floors: dict[str, ReplayFloor] = {}
    for r in replays:
        if r.source == r.setup:
            floors[r.setup] = _floor(r, rows_of(by_run[r.setup].trace.path), rows_of(r.path))
    margins, unmeasured = [], []
    results = {(d.comparison, p.prompt_id): d.result for p in prompts for d in p.divergences}
    for comparison, pid, index in divergent_steps(prompts):
        c = comparisons[comparison]
        left, right = runs[c.left], runs[c.right]
        pairs = [by_pair.get((s, t)) for s, t in ((left.name, left.name), (right.name, left.name),
                                                   (left.name, right.name), (right.name, right.name))]
        if any(p is None for p in pairs) or left.name not in floors or right.name not in floors:
            unmeasured.append(f"{pid} ({right.name})")
            continue
        ll, rl, lr, rr = (rows_of(p.path).get(pid) for p in pairs if p is not None)
        if ll is None or rl is None or lr is None or rr is None:
            unmeasured.append(f"{pid} ({right.name})")
            continue
        result = results[(comparison, pid)]
        margins.append(_margin(comparison, pid, index, left, right, (ll, rl, lr, rr), floors, result, options))
    floor_list = list(floors.values())
    return CheckReplay(replays=list(replays), floors=floor_list, margins=margins, unmeasured=unmeasured,
                       text=_text(margins, floor_list, unmeasured, replays))


def _floor(replay: CheckReplayTrace, decoded: dict[str, Row], forced: dict[str, Row]) -> ReplayFloor:
    diffs: list[float] = []
    rank1 = 0
    for pid, row in forced.items():
        original = decoded.get(pid)
        if original is None or original.logprobs is None or row.logprobs is None:
            continue
        diffs.extend(abs(a - b) for a, b in zip(row.logprobs, original.logprobs))
        rank1 += sum(1 for r in (row.ranks or []) if r == 1)
    return ReplayFloor(setup=replay.setup, replay=replay.name, compared=len(diffs), max_abs=max(diffs, default=0.0),
                       mean_abs=sum(diffs) / len(diffs) if diffs else 0.0, rank1=rank1)


def _setup_margin(run: CheckRun, left: Row, right: Row, index: int) -> ReplaySetupMargin:
    assert left.logprobs is not None and right.logprobs is not None
    a, b = left.logprobs[index], right.logprobs[index]
    return ReplaySetupMargin(
        setup=run.name, batch_size=run.batch_size, composition=run.composition, left_logprob=a, right_logprob=b,
        margin=a - b, left_rank=left.ranks[index] if left.ranks else None,
        right_rank=right.ranks[index] if right.ranks else None,
    )


def _prefers(margin: float, first: int, second: int) -> bool:
    """Greedy decoding picks ``first`` over ``second``: a larger logprob, or an equal one and a lower id."""
    return margin > 0 or (margin == 0 and first < second)


def _margin(comparison: int, pid: str, index: int, left: CheckRun, right: CheckRun, rows: tuple[Row, Row, Row, Row],
            floors: dict[str, ReplayFloor], result: object, options: DiffOptions) -> ReplayMargin:
    ll, rl, lr, rr = rows
    a, b = ll.token_ids[index], rl.token_ids[index]
    under_left = _setup_margin(left, ll, rl, index)
    under_right = _setup_margin(right, lr, rr, index)
    noise = max(floors[left.name].max_abs, floors[right.name].max_abs)
    tolerance = options.near_tie_factor * noise
    evidence = getattr(result, "evidence", None)
    if under_left.margin == 0 and under_right.margin == 0:
        verdict: ReplayVerdict = "near_tie"
        words = ("an exact tie, measured: in both setups the two tokens get the same logprob at the same prefix, "
                 "so what chose between them lies below what the replay resolves (the dtype's rounding, the kernels)")
    elif max(abs(under_left.margin), abs(under_right.margin)) <= tolerance:
        verdict = "near_tie"
        words = "a near tie, measured: in both setups the two tokens lie within the replay's noise of each other"
    elif _prefers(under_left.margin, a, b) and _prefers(-under_right.margin, b, a):
        verdict = "flip_confirmed"
        words = "a flip the replay confirms: each setup, at the same prefix, prefers its own run's token"
    else:
        verdict = "not_reproduced"
        words = ("not reproduced: replayed at the same prefix, a setup prefers the other run's token beyond the noise, "
                 "so the setups' numbers there do not explain the divergence")
    text = (f"At token {index}, {left.name}'s setup gives its token a margin of {num(under_left.margin)} and "
            f"{right.name}'s setup {num(under_right.margin)} (tolerance {num(tolerance)}): {words}.")
    return ReplayMargin(
        comparison=comparison, prompt_id=pid, index=index, left_token=a, right_token=b,
        left_setup=under_left, right_setup=under_right,
        inferred_left_lead=getattr(evidence, "left_lead", None), inferred_right_lead=getattr(evidence, "right_lead", None),
        noise=noise, tolerance=tolerance, inferred=str(getattr(result, "classification", "")), verdict=verdict, text=text,
    )


def _text(margins: list[ReplayMargin], floors: list[ReplayFloor], unmeasured: list[str],
          replays: Sequence[CheckReplayTrace] = ()) -> str:
    if not margins and not unmeasured:
        return "No prompt's tokens diverge from run 0: nothing to replay."
    words = {"near_tie": ("near tie", "near ties"), "flip_confirmed": ("flip confirmed", "flips confirmed"),
             "not_reproduced": ("not reproduced", "not reproduced")}
    kinds = {v: sum(1 for m in margins if m.verdict == v) for v in words}
    listed = ", ".join(count(n, *words[v]) for v, n in kinds.items() if n)
    parts = [f"Replay measured {count(len(margins), 'divergence')} at the shared prefix ({listed or 'none'})."]
    if floors:
        worst = max(floors, key=lambda f: f.max_abs)
        parts.append(f"Noise floor (a run replayed under its own setup against its decoded logprobs): "
                     f"up to {num(worst.max_abs)} ({worst.setup}).")
    if unmeasured:
        parts.append(f"Not measured: {', '.join(unmeasured)}.")
    split = [r for r in replays if r.split()]
    if split:
        listed = ", ".join(f"{r.name} ({r.split()} of {len(r.scheduled or [])})" for r in split)
        parts.append(f"The engine did not score every replayed batch as one batch ({listed} split over several steps, "
                     "or with no scheduling times): those replays stand for smaller batches than their setup's.")
    return " ".join(parts)

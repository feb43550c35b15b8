"""``detllm check --replay``: the replays behind replay-backed verdicts, on the check's loaded model.

For every first divergence between run 0 and run N, both runs' rows are replayed
(teacher forcing) under both setups, each with the batch size and composition of the
setup it stands for: the diverging prompts' batches are rebuilt as that setup built
them, with the source run's rows as batch-mates. Only batches holding a diverging
prompt are replayed. Against a server (a concurrency check) a setup is a number of
requests in flight: every row of the source run is scored with that many scoring
requests in flight, so the diverging prompts meet the load their setup had. The traces go to ``replays/`` with an index
(``replays/replays.json``) that :func:`detllm.diff.build_check_report` judges, offline
(``detllm/diff/_check_replay.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from ..errors import UsageError
from ..reader import open_trace
from ..diff.model import CheckReplayTrace, CheckReport
from ..diff.inputs import REPLAYS_DIR, plan_replays, write_index
from ..trace import Batch, Row
from ..writer import TraceWriter
from .replay import DEFAULT_TOP_K, _header, _replay_batch, read_source
from .runner import CaptureSession, RunConfig, make_batches

def refuse_replay(isolate: bool) -> None:
    """One line for a combination ``--replay`` does not support (every backend scores forced
    tokens: hf and vllm on the check's loaded model, openai through the server's ``prompt_logprobs``)."""
    if isolate:
        raise UsageError("--replay replays on the check's loaded model, which --isolate does not keep; drop one of them")


def replay_divergences(
    session: CaptureSession, config: RunConfig, directory: Path, report: CheckReport, prompt_ids: list[str]
) -> list[CheckReplayTrace]:
    """Record the replays that measure every divergence of ``report``; write their index."""
    planned = plan_replays(report.runs, report.comparisons, report.prompts)
    (directory / REPLAYS_DIR).mkdir(exist_ok=True)
    paths = {run.name: directory / run.trace.path for run in report.runs}
    levels = {run.name: run.concurrency for run in report.runs}
    done = []
    for spec in planned:
        rows, scheduled = _replay_one(session, config, paths[spec.source], directory / spec.path, spec, prompt_ids,
                                      levels[spec.setup])
        done.append(msgspec.structs.replace(spec, rows=rows, scheduled=scheduled))
    write_index(directory, done)
    return done


def _replay_one(
    session: CaptureSession, config: RunConfig, source: Path, target: Path, spec: CheckReplayTrace, prompt_ids: list[str],
    concurrency: int | None = None,
) -> tuple[int, list[int] | None]:
    """Replay ``spec``; return the rows written and, for an engine that schedules (vLLM), the
    steps over which each batch was first scheduled. ``concurrency``: the requests in flight
    of the setup ``spec`` stands for (a server check), None in process."""
    src = read_source(source)
    k = src.header.logprobs.top_k or DEFAULT_TOP_K
    setup = msgspec.structs.replace(config, batch_size=spec.batch_size, composition=spec.composition,
                                    logprobs="raw", top_logprobs=k)
    backend: Any = session.backend
    with open_trace(src.path) as reader:
        rows = {row.prompt_id: row for row in reader}
    wanted = set(spec.prompts)
    if concurrency is None:
        batches = [b for b in make_batches(len(prompt_ids), spec.batch_size, spec.composition)
                   if any(prompt_ids[i] in wanted for i in b)]
    else:  # every row, ``concurrency`` at a time: the load of that setup, not a batch
        backend.concurrency = concurrency
        batches = [list(range(len(prompt_ids)))]
    session.controls.reseed()
    header = msgspec.structs.replace(
        _header(session, src, setup), batch=Batch(size=spec.batch_size, composition=spec.composition)
    )
    if concurrency is not None:
        header = msgspec.structs.replace(header, labels={**header.labels, "concurrency": str(concurrency)})
    replayed: dict[int, Row] = {}
    scheduled: list[int] | None = [] if hasattr(backend, "scored_steps") else None
    for index, batch in enumerate(batches):
        group = [rows[prompt_ids[i]] for i in batch]
        for i, row in zip(batch, _replay_batch(backend, group, index, k, getattr(backend, "token_texts", None))):
            replayed[i] = row if concurrency is None else msgspec.structs.replace(row, batch=None)
        if scheduled is not None:
            scheduled.append(backend.scored_steps or 0)
    with TraceWriter(target, header) as writer:
        for i in sorted(replayed):  # the source's order (P2), placements say the batches
            writer.write(replayed[i])
    return len(replayed), scheduled

"""Traces whose every string is hostile: markup, quotes, bidi overrides, control characters."""

from __future__ import annotations

import random
from pathlib import Path

from detllm.diff import diff_traces
from detllm.diff._report import DiffReport
from detllm.trace import Artifact
from tests.diff._traces import flip_at, header, replace, row, write

HOSTILE = [
    "<script>window.__pwned=1</script>",
    "</svg><script>window.__pwned=2</script><svg>",
    '"><img src=x onerror="window.__pwned=3">',
    "' onmouseover='window.__pwned=4' x='",
    "\u202eevil\u202c",
    "\u2066isolate\u2069\u200f",
    "\x00\x07\x1b[31mred\x1b[0m\r\n\t",
    "</style></title></textarea><b>bold</b>",
    "<!-- -->]]>&amp;&lt;",
    "<link rel=stylesheet href=http://127.0.0.1:9/x.css>",
    "<iframe src=http://127.0.0.1:9/></iframe>",
    "x" * 400,
]

PROMPT_IDS = [
    "<script>window.__pwned=5</script>",
    'p"1\'<b>',
    "\u202eDI tpmorp",
    "p\x1b[2J\x00",
]


def hostile_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two traces of four hostile prompts: two flip, one drifts, one is the same."""
    rng = random.Random(7)
    rows = []
    for i, pid in enumerate(PROMPT_IDS):
        r = row(pid, rng, 10, vocab=len(HOSTILE))
        rows.append(replace(r, token_texts={t: HOSTILE[t] for t in r.token_texts}))
    right = [flip_at(rows[0], 3), flip_at(rows[1], 6), rows[2], rows[3]]
    model = Artifact(id='<img src="http://127.0.0.1:9/m.png">\u202emodel', fingerprint="sha256:" + "1" * 64)
    left_head = header(model=model, device="cpu<script>window.__pwned=6</script>")
    right_head = header(model=model, device="cpu\u202e\"'><svg onload=window.__pwned=7>")
    left = write(tmp_path / 'le"ft<script>.jsonl', rows, left_head)
    right_path = write(tmp_path / "right\u202e.jsonl", right, right_head)
    return left, right_path


def hostile_report(tmp_path: Path) -> DiffReport:
    left, right = hostile_pair(tmp_path)
    return diff_traces(left, right)


def hostile_replay(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A trace of the hostile prompts and a replay of it under another dtype in which the
    first token of each prompt would flip; every token text, the model id, the device and the
    file names hostile."""
    import json

    import msgspec

    from detllm import write_trace
    from detllm.diff import build_replay_report
    from detllm.trace import REPLAY_VERSION, Replay
    from tests.factories import make_header, make_row

    texts = {10 + i: HOSTILE[i] for i in range(4)} | {110: HOSTILE[4], 111: HOSTILE[5]}
    model = Artifact(id=HOSTILE[2], fingerprint="sha256:" + "1" * 64)
    original = write_trace(tmp_path / 'orig"inal<script>.jsonl', make_header(model=model, device=HOSTILE[0]),
                           [make_row(pid, token_texts=texts) for pid in PROMPT_IDS])
    footer = json.loads(original.read_bytes().splitlines()[-1])
    header = make_header(model=model, device=HOSTILE[0], dtype="bfloat16</td><script>window.__pwned=8</script>",
                         version=REPLAY_VERSION,
                         replay=Replay(source_digest=footer["digest"], source_rows=len(PROMPT_IDS), source_name="o"))
    rows = []
    for pid in PROMPT_IDS:
        r = make_row(pid, token_texts=texts, ranks=[2, 1, 1, 1])
        rows.append(msgspec.structs.replace(r, top_logprobs=[[(110, -0.1), (10, -0.25)], *r.top_logprobs[1:]]))
    replay = write_trace(tmp_path / "replay\u202e.jsonl", header, rows)
    return build_replay_report(original, replay)


def hostile_bisect():  # type: ignore[no-untyped-def]
    """A bisect record whose setting names, values, run names and paths are hostile."""
    from detllm.diff.model import (
        BisectBudget, BisectDocument, BisectObserved, BisectRun, BisectSide, BisectVerdict, Producer, ReportOptions,
        SettingDifference,
    )  # fmt: skip

    def run(name: str, outcome: str, reproduced: int) -> BisectRun:
        return BisectRun(settings=[name], name=name, outcome=outcome, reason=None, trace="traces/x.jsonl",  # type: ignore[arg-type]
                         reproduced=reproduced, of=2, extra=0, divergent=PROMPT_IDS[:reproduced], classification="decisive_flip")

    return BisectDocument(
        format="detllm.report", version="1.1", kind="bisect", producer=Producer(name="detllm", version="0"),
        options=ReportOptions(tier=1, atol=0.0, near_tie_factor=4.0, noise_floor=None, context_tokens=8,
                              continuation_tokens=8, allow_incomplete=False),
        left=BisectSide(directory=HOSTILE[0], trace=HOSTILE[1]), right=BisectSide(directory=HOSTILE[2], trace=HOSTILE[4]),
        differences=[SettingDifference(setting=HOSTILE[3], left=HOSTILE[6], right={"k": HOSTILE[7]})],
        observed=BisectObserved(prompts=4, divergent=PROMPT_IDS[:2], classification="decisive_flip"),
        control=BisectRun(settings=[], name="control", outcome="cleared", reason=None, trace=None, reproduced=0, of=2,
                          extra=0, divergent=[], classification=None),
        ranking=[run(HOSTILE[8], "reproduces", 2), run(HOSTILE[5], "cleared", 0)],
        budget=BisectBudget(max_runs=16, used=3, untried=[HOSTILE[9]]),
        verdict=BisectVerdict(explained_by=[HOSTILE[8]], text=HOSTILE[10]),
    )

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

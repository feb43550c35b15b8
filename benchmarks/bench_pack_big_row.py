"""Peak memory of ``detllm pack --all`` of a run directory whose trace holds one huge row.

Usage: ``python benchmarks/bench_pack_big_row.py [--megabytes 200] [--data-dir bench-data]``

Writes a run directory (``run_config.json``, ``env.json``, ``determinism_applied.json``,
``trace.jsonl``) with a small row and one row whose ``top_logprobs`` list makes its line
about ``--megabytes`` MB, then packs it (every prompt, so the huge row is kept) in a
child process and prints the time and the child's peak RSS. A kept row that is already
canonical is written as it was read, its top-k steps checked a megabyte at a time: the
target is a peak of about three times the line (the line, its token ids and logprobs as
Python lists).

The data is made in a child process of its own, and this process never holds a line:
a child's peak RSS counts what it shared with its parent before ``exec``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_aggregate import header  # noqa: E402
from detllm.trace import Row  # noqa: E402
from detllm.writer import TraceWriter  # noqa: E402

import msgspec  # noqa: E402


def make(directory: Path, megabytes: int) -> None:
    directory.mkdir(parents=True)
    steps = megabytes * 1_000_000 // 61  # about 61 bytes a step: token, logprob, two top-k entries
    tokens = [(i % 30000) + 1 for i in range(steps)]
    big = Row(prompt_id="big", input_token_ids=[1, 2, 3], token_ids=tokens,
              logprobs=[-0.25 - (i % 7) * 1e-9 for i in range(steps)],
              top_logprobs=[[(t, -0.25 - (i % 7) * 1e-9), (t + 30001, -1.5123456789)] for i, t in enumerate(tokens)],
              finish_reason="length")  # fmt: skip
    small = Row(prompt_id="small", input_token_ids=[1], token_ids=[5], logprobs=[-0.5],
                top_logprobs=[[(5, -0.5), (6, -1.5)]], finish_reason="length")  # fmt: skip
    base = header(1)
    head = msgspec.structs.replace(base, decoding=msgspec.structs.replace(base.decoding, max_new_tokens=steps))
    with TraceWriter(directory / "trace.jsonl", head) as writer:
        writer.write(small)
        writer.write(big)
    config = {"model": "bench/model", "backend": "hf", "max_new_tokens": steps}
    document = {"format": "detllm.run_config", "version": "1.0", "command": None, "config": config,
                "prompts": [{"id": "small", "prompt": "x"}, {"id": "big", "prompt": "y"}]}  # fmt: skip
    (directory / "run_config.json").write_text(json.dumps(document))
    (directory / "env.json").write_text("{}\n")
    determinism = {"format": "detllm.determinism", "version": "1.0", "mode": "best-effort", "complete": True, "unavailable": {}}
    (directory / "determinism_applied.json").write_text(json.dumps(determinism))


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        yield from iter(lambda: file.read(1 << 20), b"")


def _longest_line(path: Path) -> int:
    longest = current = 0
    for block in _blocks(path):
        *ends, tail = block.split(b"\n")
        for piece in ends:
            longest, current = max(longest, current + len(piece)), 0
        current += len(tail)
    return max(longest, current)


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and all(x == y for x, y in zip(_blocks(a), _blocks(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--data-dir", default="bench-data")
    parser.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = Path(args.data_dir) / f"big-row-{args.megabytes}"
    if args.make_only:
        make(directory, args.megabytes)
        return
    if not (directory / "run_config.json").exists():
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--make-only", "--megabytes", str(args.megabytes),
                        "--data-dir", args.data_dir], check=True)  # fmt: skip
    size = (directory / "trace.jsonl").stat().st_size / 1e6
    print(f"trace of {size:.0f} MB, its largest line {_longest_line(directory / 'trace.jsonl') / 1e6:.0f} MB")
    out = Path(args.data_dir) / f"big-row-{args.megabytes}-pack"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "detllm", "pack", str(directory), "--all", "--out", str(out), "-q"],
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    same = out.is_dir() and _same_bytes(out / "trace.jsonl", directory / "trace.jsonl")
    print(f"pack --all         exit {os.waitstatus_to_exitcode(status)}  {seconds:6.1f} s  "
          f"peak RSS {usage.ru_maxrss / 1024:6.0f} MB  trace byte-identical: {same}")


if __name__ == "__main__":
    main()

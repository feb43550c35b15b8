"""Time and size of the HTML report for a large check and a large diff.

    python benchmarks/bench_html.py [--prompts 1000] [--runs 10] [--repeats 5]

The check is the recorded ``fixtures/recorded/check-flip`` report with its prompts and
runs repeated to ``--prompts`` x ``--runs`` (``tests/html/_large.py``); the diff is
two synthetic traces of ``--prompts`` prompts, every other one flipped at token 2, so
that half of them diverge (a diff page shows every diverging prompt). Prints the
median and minimum render time and the page's size. Targets for the check: under 2 s
and under 3 MB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detllm.diff import diff_traces  # noqa: E402
from detllm.report import render_html  # noqa: E402
from tests.diff._traces import flip_at, rows, write  # noqa: E402
from tests.html._large import large_check  # noqa: E402


def measure(name: str, report: object, repeats: int) -> None:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        page = render_html(report)
        times.append(time.perf_counter() - start)
    size = len(page.encode())
    print(f"{name:<34} median {statistics.median(times):6.3f} s   min {min(times):6.3f} s   "
          f"{size / 1e6:6.2f} MB ({size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    measure(f"check {args.prompts} prompts x {args.runs} runs", large_check(args.prompts, args.runs), args.repeats)
    with tempfile.TemporaryDirectory() as scratch:
        left = rows(args.prompts, seed=1, length=32)
        right = [flip_at(r, 2) if i % 2 else r for i, r in enumerate(left)]
        report = diff_traces(write(Path(scratch) / "a.jsonl", left), write(Path(scratch) / "b.jsonl", right))
        measure(f"diff {args.prompts} prompts, {args.prompts // 2} diverge", report, args.repeats)


if __name__ == "__main__":
    main()

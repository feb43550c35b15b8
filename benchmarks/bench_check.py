"""Wall time of ``detllm check``, split into its parts.

    python benchmarks/bench_check.py [--model tiny-flip] [--backend hf] [--runs 2]
                                     [--batch-size 1,8] [--max-new-tokens 32]

Runs one check in this process, as ``detllm check`` does, and prints how long it
took from the start to the model being loaded (imports, determinism controls,
the backend), each trace, and the comparison and report, from the check's own
progress reports; then the peak resident memory. The first part is mostly
importing torch and transformers (or vLLM, and starting its engine).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-flip")
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch-size", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    marks: list[tuple[str, float]] = []

    def progress(done: int, total: int, run: str, detail: str) -> None:
        if not marks or marks[-1][0] != run:
            marks.append((run, time.perf_counter()))

    import detllm

    with tempfile.TemporaryDirectory() as scratch:
        result = detllm.check(
            args.model,
            None,
            out=Path(scratch) / "check",
            runs=args.runs,
            batch_sizes=[int(b) for b in args.batch_size.split(",")],
            backend=args.backend,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
            progress=progress,
        )
    end = time.perf_counter()
    marks.append(("end", end))
    print(f"detllm check --model {args.model} --backend {args.backend} --runs {args.runs} "
          f"--batch-size {args.batch_size} --max-new-tokens {args.max_new_tokens}: exit status {result.exit_code}")
    print(f"  {'until loading':<24} {marks[0][1] - start:7.2f} s   (import detllm)")
    for (name, at), (_, following) in zip(marks, marks[1:]):
        print(f"  {name:<24} {following - at:7.2f} s")
    print(f"  {'total':<24} {end - start:7.2f} s")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

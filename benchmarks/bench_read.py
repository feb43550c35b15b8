"""Read throughput of a large trace, next to reading the same bytes raw.

    python benchmarks/bench_read.py [--size-mb 512] [--dir bench-data]

Generates a trace of about ``--size-mb`` megabytes (128 tokens per row, top-5
alternatives, token texts), then times, each in a fresh process so that peak memory
is its own: reading the raw bytes, ``raw_rows()`` (lines, no decoding), decoding every
row, decoding without the per-row rules, ``validate`` (rules + digest), and the same
for the gzip-compressed file. Prints MB/s of file bytes and peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detllm import Batch, Decoding, Logprobs, Row, TraceWriter  # noqa: E402
from tests.factories import make_header  # noqa: E402

TOKENS = 128
TOP_K = 5

MODES = {
    "raw bytes": "read",
    "raw_rows()": "raw_rows",
    "decode rows": "decode",
    "decode, no rules": "decode_unchecked",
    "validate": "validate",
}


def generate(path: Path, size_mb: int) -> None:
    rng = random.Random(0)
    header = make_header(
        decoding=Decoding(do_sample=False, max_new_tokens=TOKENS),
        batch=Batch(size=8),
        logprobs=Logprobs(semantics="raw", top_k=TOP_K),
    )
    target = size_mb * 1_000_000
    with TraceWriter(path, header) as writer:
        i = 0
        while True:
            tokens = [rng.randrange(50_000) for _ in range(TOKENS)]
            top = []
            logprobs = []
            for token in tokens:
                values = sorted((-rng.random() * 8 for _ in range(TOP_K)), reverse=True)
                ids = [token] + [rng.randrange(50_000) for _ in range(TOP_K - 1)]
                step = dict(zip(ids, values))
                top.append(list(step.items()))
                logprobs.append(step[token])
            texts = {t: f" tok{t}" for step in top for t, _ in step}
            writer.write(
                Row(
                    prompt_id=f"prompt-{i:08d}",
                    input_token_ids=[rng.randrange(50_000) for _ in range(64)],
                    token_ids=tokens,
                    logprobs=logprobs,
                    top_logprobs=top,
                    finish_reason="length",
                    token_texts=texts,
                )
            )
            i += 1
            if i % 256 == 0 and writer._raw.tell() >= target:
                break


def child(mode: str, path: str) -> None:
    """Run one mode in this process; print seconds, rows and peak RSS in KiB."""
    from detllm import open_trace, validate_trace

    rows = 0
    start = time.perf_counter()
    if mode == "read":
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            while f.read(1 << 20):
                pass
    elif mode == "raw_rows":
        with open_trace(path, verify_digest=False) as reader:
            for _ in reader.raw_rows():
                rows += 1
    elif mode == "decode":
        with open_trace(path) as reader:
            for _ in reader:
                rows += 1
    elif mode == "decode_unchecked":
        with open_trace(path, check_rows=False, verify_digest=False) as reader:
            for _ in reader:
                rows += 1
    elif mode == "validate":
        result = validate_trace(path)
        assert result.valid, result.findings[:3]
        rows = result.rows
    elapsed = time.perf_counter() - start
    print(elapsed, rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(mode: str, path: Path) -> tuple[float, float]:
    """Seconds (start-up excluded) and peak RSS in MB of one mode, in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), int(out[2]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    plain = args.dir / f"read-{args.size_mb}mb.jsonl"
    if not plain.exists():
        start = time.perf_counter()
        generate(plain, args.size_mb)
        print(f"generated {plain} in {time.perf_counter() - start:.1f} s")
    packed = plain.with_suffix(".jsonl.gz")
    if not packed.exists():
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    for path in (plain, packed):
        size = path.stat().st_size
        measure("read", path)  # warm the page cache
        print(f"\n{path.name}: {size / 1e6:.0f} MB on disk")
        print(f"  {'mode':<18} {'seconds':>8} {'MB/s':>9} {'peak RSS MB':>12}")
        results = {}
        for label, mode in MODES.items():
            elapsed, peak = measure(mode, path)
            results[label] = elapsed
            print(f"  {label:<18} {elapsed:8.2f} {size / 1e6 / elapsed:9.0f} {peak:12.0f}")
        ratio = results["decode rows"] / results["raw bytes"]
        print(f"  decode rows takes {ratio:.1f}x the time of reading the raw bytes")


if __name__ == "__main__":
    main()

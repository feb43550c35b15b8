"""Throughput and memory of ``detllm diff`` on large generated trace pairs, next to ``cmp``.

Usage: ``python benchmarks/bench_diff.py [--size-mb 1024] [--data-dir bench-data]``

Writes three traces of about ``--size-mb`` each with the trace writer (a reference
run, a byte-identical repeat with its own header, and a repeat in which every row
diverges: all logprobs drift and one token flips at a different position in each
row), then times ``detllm diff`` on the identical pair and on the divergent pair in
a child process. It prints MB/s of input (both files), peak RSS of the child, and,
on the same files in the same run, ``cat`` (reading the bytes) and ``cmp`` (comparing
them, headers skipped). ``cmp`` stops at the first differing byte, so on the
divergent pair it shows how soon that is, not a throughput.

Targets on a 2-core machine: identical >= 1 GB/s, divergent >= 200 MB/s, RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detllm.trace import Artifact, Batch, Decoding, Header, Logprobs, Placement, Row, Software  # noqa: E402
from detllm.writer import TraceWriter  # noqa: E402

TOKENS = 256
TOP_K = 5
VOCAB = 32000
POOL = 48
"""Distinct row contents; rows repeat them under new prompt ids."""


def f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def header(created_at: str, batch: int) -> Header:
    return Header(
        producer=Software(name="detllm", version="0.1.0"),
        created_at=created_at,
        backend=Software(name="hf", version="5.24.0"),
        model=Artifact(id="bench/model", fingerprint="sha256:" + "ab" * 32),
        tokenizer=Artifact(id="bench/tokenizer", fingerprint="sha256:" + "cd" * 32),
        dtype="float32",
        device="cpu",
        decoding=Decoding(do_sample=False, max_new_tokens=TOKENS),
        batch=Batch(size=batch),
        logprobs=Logprobs(semantics="raw", top_k=TOP_K),
    )


def vocabulary(rng: random.Random) -> list[str]:
    """Token texts: short word pieces, most with a leading space, as a BPE vocabulary has."""
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    return [
        (" " if rng.random() < 0.7 else "") + "".join(rng.choice(letters) for _ in range(rng.randint(1, 7)))
        for _ in range(VOCAB)
    ]


def _token(rng: random.Random) -> int:
    # Half the alternatives come from a few hundred frequent tokens, as in real text.
    return rng.randrange(300) if rng.random() < 0.5 else rng.randrange(VOCAB)


Pooled = tuple[list[int], list[int], list[float], list[list[tuple[int, float]]], dict[int, str]]


def _texts(vocab: list[str], inputs: list[int], tops: list[list[tuple[int, float]]]) -> dict[int, str]:
    used = set(inputs) | {t for step in tops for t, _ in step}
    return {t: vocab[t] for t in sorted(used)}


def pool_rows(seed: int) -> tuple[list[str], list[Pooled]]:
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    pool = []
    for _ in range(POOL):
        inputs = [rng.randrange(VOCAB) for _ in range(rng.randint(20, 60))]
        tokens, logprobs, tops = [], [], []
        for _ in range(TOKENS):
            ids: set[int] = set()
            while len(ids) < TOP_K:
                ids.add(_token(rng))
            order = sorted(ids)
            rng.shuffle(order)
            values = sorted((f32(-0.01 - rng.expovariate(0.7)) for _ in range(TOP_K)), reverse=True)
            step = sorted(zip(order, values), key=lambda e: (-e[1], e[0]))
            tokens.append(step[0][0])
            logprobs.append(step[0][1])
            tops.append(step)
        pool.append((inputs, tokens, logprobs, tops, _texts(vocab, inputs, tops)))
    return vocab, pool


def diverged(vocab: list[str], pool: list[Pooled], n: int) -> Pooled:
    """Row ``n`` of the pool with drifted logprobs and a flip; the tail comes from another row."""
    inputs, tokens, logprobs, tops, _ = pool[n]
    other = pool[(n + 1) % len(pool)]
    flip = (n * 37 + 11) % TOKENS
    new_tokens, new_logprobs, new_tops = [], [], []
    for i in range(TOKENS):
        delta = ((i * 7919) % 11 - 5) * 2.4e-7
        if i < flip:
            step = [(t, v + delta) for t, v in tops[i]]
        elif i == flip:
            (a, va), (b, vb), *rest = tops[i]
            step = [(b, va + delta), (a, vb + delta)] + [(t, v + delta) for t, v in rest]
        else:
            step = [(t, v + delta) for t, v in other[3][i]]
        new_tokens.append(step[0][0])
        new_logprobs.append(step[0][1])
        new_tops.append(step)
    return inputs, new_tokens, new_logprobs, new_tops, _texts(vocab, inputs, new_tops)


def write(path: Path, created_at: str, batch: int, rows_of: list, target: int, rows: int | None = None) -> int:
    """Write rows until the file reaches ``target`` bytes, or exactly ``rows`` rows."""
    count = 0
    with TraceWriter(path, header(created_at, batch)) as writer:
        while True:
            inputs, tokens, logprobs, tops, texts = rows_of[count % len(rows_of)]
            writer.write(
                Row(
                    prompt_id=f"prompt-{count:07d}",
                    input_token_ids=inputs,
                    token_ids=tokens,
                    logprobs=logprobs,
                    top_logprobs=tops,
                    finish_reason="length",
                    token_texts=texts,
                    batch=Placement(index=count // batch, position=count % batch, size=batch),
                )
            )
            count += 1
            if count == rows or (rows is None and writer._raw.tell() >= target):  # noqa: SLF001
                break
    return count


def generate(directory: Path, size: int) -> tuple[Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"traces-{size}.ok"
    names = (directory / "reference.jsonl", directory / "repeat.jsonl", directory / "divergent.jsonl")
    if stamp.exists() and all(p.exists() for p in names):
        return names
    vocab, pool = pool_rows(1)
    started = time.perf_counter()
    rows = write(names[0], "2026-11-28T10:00:00Z", 8, pool, size)
    write(names[1], "2026-11-28T10:30:00Z", 8, pool, size, rows)
    write(names[2], "2026-11-28T11:00:00Z", 1, [diverged(vocab, pool, n) for n in range(POOL)], size, rows)
    stamp.write_text(f"{rows}\n")
    print(f"generated 3 traces of {rows} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return names


TIME = "/usr/bin/time"


def timed(command: list[str], **kwargs) -> tuple[float, float | None, int, int]:
    """Wall seconds, CPU seconds, peak RSS (bytes) and exit status of a child process.

    ``/usr/bin/time`` measures them: it forks a small process, whereas a child forked
    from this script would count the script's own pages before its exec. The CPU time
    and peak RSS include the child's own worker processes.
    """
    if os.path.exists(TIME):
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M %U %S", *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
        )
        elapsed = time.perf_counter() - started
        rss, user, system = done.stderr.strip().splitlines()[-1].split()
        return elapsed, float(user) + float(system), int(rss) * 1024, done.returncode
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, **kwargs)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)


def header_length(path: Path) -> int:
    with open(path, "rb") as f:
        return len(f.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024, help="size of each trace (default 1024 MB)")
    parser.add_argument("--data-dir", default=str(ROOT / "bench-data"), help="where to write the traces")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command; the fastest is shown")
    parser.add_argument("--workers", type=int, default=None, help="pass --workers N to detllm diff (default: its own choice)")
    args = parser.parse_args()
    size = int(args.size_mb * 1024 * 1024)
    reference, repeat, divergent = generate(Path(args.data_dir), size)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    detllm = [sys.executable, "-m", "detllm", "diff"] + ([] if args.workers is None else ["--workers", str(args.workers)])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} before the runs")
    print(f"{'pair':<11} {'command':<12} {'input MB':>9} {'seconds':>8} {'MB/s':>8} {'CPU s':>7} {'peak RSS MB':>12} {'exit':>5}")
    for name, right, expect in (("identical", repeat, 0), ("divergent", divergent, 1)):
        total = reference.stat().st_size + right.stat().st_size
        skip = f"--ignore-initial={header_length(reference)}:{header_length(right)}"
        commands = {
            "cat": ["cat", str(reference), str(right)],
            "cmp": ["cmp", "-s", skip, str(reference), str(right)],
            "detllm diff": detllm + [str(reference), str(right)],
        }
        for label, command in commands.items():
            runs = [timed(command, env=env) for _ in range(args.repeat)]
            seconds, cpu, rss, code = min(runs)
            rate = total / seconds / 1e6
            cpu_text = f"{cpu:.2f}" if cpu is not None else "n/a"
            print(
                f"{name:<11} {label:<12} {total / 1e6:>9.0f} {seconds:>8.3f} {rate:>8.0f} {cpu_text:>7} "
                f"{max(r[2] for r in runs) / 1e6:>12.1f} {code:>5}"
            )
            if label == "detllm diff" and code != expect:
                print(f"  unexpected exit status {code} (expected {expect})", file=sys.stderr)
        if name == "divergent":
            where = subprocess.run(["cmp", skip, str(reference), str(right)], capture_output=True, text=True).stdout.strip()
            print(f"  (cmp stops at the first difference: {where.split(': ', 1)[-1] or 'none'}, after the headers)")
    ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(this script's own peak RSS: {ours:.0f} MB; MB = 10^6 bytes, input = both files)")


if __name__ == "__main__":
    main()

"""Throughput and memory of ``detllm report A B C`` (the aggregate of three traces) and ``detllm pack``.

Usage: ``python benchmarks/bench_aggregate.py [--rows 1000000] [--data-dir bench-data] [--only pack [--saved-report]]``

Writes a check directory with three traces of ``--rows`` small rows each (4 tokens,
top-2 logprobs): a reference run, a byte-identical repeat, and a batch-size run in
which every 100th prompt flips a token. Then, each in a child process, it times the
aggregate (``detllm report`` of the three traces, JSON to /dev/null), ``detllm diff`` of the
reference and the batch-size run (on its own choice of workers, then with ``--workers 2``),
and ``detllm pack``
of the directory (the diverging prompts; with ``--saved-report``, of a copy that holds the
report.json ``detllm check`` would have left), and prints MB/s of input (all three traces)
and the child's peak RSS.

Targets: aggregate of three 1 GB traces <= 300 MB RSS and >= 100 MB/s; diff <= 150 MB;
pack bounded by the diverging prompts, not the rows. The peak RSS counts the child's
own worker processes (``wait4`` reports the largest of them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detllm.rundir import plan_runs  # noqa: E402
from detllm.trace import Artifact, Batch, Decoding, Header, Logprobs, Row, Software  # noqa: E402
from detllm.writer import TraceWriter  # noqa: E402

import msgspec  # noqa: E402


def header(batch: int) -> Header:
    return Header(
        producer=Software(name="detllm", version="0.1.0"),
        created_at="2026-12-02T10:00:00Z",
        backend=Software(name="hf", version="5.24.0"),
        model=Artifact(id="bench/model", fingerprint="sha256:" + "ab" * 32),
        tokenizer=Artifact(id="bench/tokenizer", fingerprint="sha256:" + "cd" * 32),
        dtype="float32",
        device="cpu",
        decoding=Decoding(do_sample=False, max_new_tokens=4),
        batch=Batch(size=batch),
        logprobs=Logprobs(semantics="raw", top_k=2),
    )


def row(i: int, flip: bool) -> Row:
    a, b = (i % 97) + 1, (i % 89) + 200
    tokens = [a, a + 1, b if flip else a + 2, a + 3]
    tops = [[(t, -0.25), (t + 500, -1.5)] for t in tokens]
    if flip:
        tops[2] = [(b, -0.5), (a + 2, -0.5000001)]
    return Row(
        prompt_id=f"p{i}",
        input_token_ids=[1, 2, 3],
        token_ids=tokens,
        logprobs=[step[0][1] for step in tops],
        top_logprobs=tops,
        finish_reason="length",
    )


def make(directory: Path, rows: int) -> list[Path]:
    planned = plan_runs(2, [1, 8], [])
    (directory / "traces").mkdir(parents=True)
    paths = []
    for run in planned:
        path = directory / run.path
        flips = run.batch_size != 1
        with TraceWriter(path, header(run.batch_size)) as writer:
            for i in range(rows):
                writer.write(row(i, flips and i % 100 == 0))
        paths.append(path)
    config = {"model": "bench/model", "backend": "hf", "max_new_tokens": 4}
    document = {
        "format": "detllm.run_config", "version": "1.0", "command": None, "config": config,
        "prompts": [{"id": f"p{i}", "prompt": "x"} for i in range(rows)],
        "check": {"runs": 2, "batch_sizes": [1, 8], "compositions": [], "traces": msgspec.to_builtins(planned)},
    }  # fmt: skip
    (directory / "run_config.json").write_text(json.dumps(document))
    (directory / "env.json").write_text("{}\n")
    determinism = {"format": "detllm.determinism", "version": "1.0", "mode": "best-effort", "complete": True, "unavailable": {}}
    (directory / "determinism_applied.json").write_text(json.dumps(determinism))
    return paths


def measure(label: str, command: list[str], megabytes: float) -> None:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    print(f"{label:<20} exit {child.returncode}  {seconds:7.1f} s  {megabytes / seconds:7.1f} MB/s  "
          f"peak RSS {usage.ru_maxrss / 1024:7.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default="bench-data")
    parser.add_argument("--only", choices=("aggregate", "pack", "diff"), help="one of the measurements")
    parser.add_argument("--saved-report", action="store_true",
                        help="pack a copy of the check directory that holds its report.json, as detllm check leaves it")
    parser.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = Path(args.data_dir) / f"aggregate-{args.rows}"
    if args.make_only:
        shutil.rmtree(directory, ignore_errors=True)
        make(directory, args.rows)
        return
    if not (directory / "run_config.json").exists():
        # In a child of its own: a child's peak RSS starts from its parent's at the fork, so
        # the data made in this process would count in every measurement after it.
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--data-dir", args.data_dir, "--make-only"], check=True)
        print(f"wrote three traces of {args.rows} rows in {time.perf_counter() - start:.1f} s")
    traces = sorted((directory / "traces").glob("*.jsonl"))
    megabytes = sum(p.stat().st_size for p in traces) / 1e6
    print(f"{len(traces)} traces, {megabytes:.0f} MB in all")
    python = [sys.executable, "-m", "detllm"]
    if args.only in (None, "aggregate"):
        measure("aggregate of three", [*python, "report", *map(str, traces), "--json"], megabytes)
    if args.only in (None, "diff"):
        pair = [traces[0], traces[-1]]
        size = sum(p.stat().st_size for p in pair) / 1e6
        measure("diff of two", [*python, "diff", *map(str, pair), "--json"], size)
        measure("diff, --workers 2", [*python, "diff", "--workers", "2", *map(str, pair), "--json"], size)
    if args.only in (None, "pack"):
        out = Path(args.data_dir) / f"pack-{args.rows}"
        source = with_report(directory, python) if args.saved_report else directory
        shutil.rmtree(out, ignore_errors=True)
        label = "pack, saved report" if args.saved_report else "pack"
        measure(label, [*python, "pack", str(source), "--out", str(out), "-q"], megabytes)


def with_report(directory: Path, python: list[str]) -> Path:
    """A copy of the check directory (traces hard-linked) with the report.json that
    ``detllm report DIR --out DIR`` writes, made once."""
    saved = directory.with_name(directory.name + "-saved")
    if not (saved / "report.json").exists():
        shutil.rmtree(saved, ignore_errors=True)
        (saved / "traces").mkdir(parents=True)
        for path in directory.iterdir():
            if path.is_file():
                shutil.copyfile(path, saved / path.name)
        for path in (directory / "traces").iterdir():
            os.link(path, saved / "traces" / path.name)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = subprocess.run([*python, "report", str(saved), "--out", str(saved), "-q"], env=env, stdout=subprocess.DEVNULL)
        if done.returncode not in (0, 1):  # 1: the runs differ, as they do here
            raise SystemExit(f"detllm report {saved} --out: exit {done.returncode}")
        print(f"report.json of the copy: {(saved / 'report.json').stat().st_size / 1e6:.0f} MB")
    return saved


if __name__ == "__main__":
    main()

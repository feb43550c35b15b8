"""The vLLM backend on a real engine: the default set-up, engine core in a child process.

One engine serves the whole module; the last test shuts it down.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from _vllm_fixtures import vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

import psutil  # noqa: E402 - a dependency of vLLM

from detllm.capture.backend import Prompt  # noqa: E402
from detllm.capture.registry import BackendConfig, load_backend  # noqa: E402
from detllm.errors import CaptureError, DeterminismUnavailableError  # noqa: E402
from detllm.trace import Batch, Decoding, Header, Logprobs, Software, encode, row_problems  # noqa: E402
from detllm.validate import validate_trace  # noqa: E402
from detllm.writer import write_trace  # noqa: E402

pytestmark = pytest.mark.vllm

K = 5
GREEDY = Decoding(do_sample=False, max_new_tokens=12)
PROMPTS = [
    Prompt(id="fox", text="The quick brown fox"),
    Prompt(id="hello", text="Hello world!"),
    Prompt(id="cafe", text="Déjà vu, naïve café 🙂"),
    Prompt(id="ids", token_ids=(5, 17, 42, 99, 7)),
]


@pytest.fixture(scope="module")
def engine(model_dir: str):
    from detllm.capture.vllm import VLLMBackend

    backend = VLLMBackend(BackendConfig(model=model_dir, max_batch_size=4, options={"max_model_len": 256}))
    yield backend
    backend.close()


def sampling(seed: int, **changes: object) -> Decoding:
    settings: dict = {"do_sample": True, "temperature": 1.0, "max_new_tokens": 12, "seed": seed, **changes}
    return Decoding(**settings)


def header_for(engine, decoding: Decoding, top_k: int = K, batch_size: int = 4) -> Header:
    description = engine.describe()
    return Header(
        producer=Software(name="detllm", version="test"),
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        backend=description.backend,
        model=description.model,
        tokenizer=description.tokenizer,
        dtype=description.dtype,
        device=description.device,
        decoding=engine.resolve_decoding(decoding),
        batch=Batch(size=batch_size),
        logprobs=Logprobs(semantics="raw", top_k=top_k),
        backend_settings=description.settings,
    )


def test_registry_loads_the_backend(engine) -> None:
    # The registry's entry reaches the class; its option check runs before any engine starts.
    with pytest.raises(CaptureError, match="has no option 'bogus'"):
        load_backend("vllm", BackendConfig(model="unused", options={"bogus": 1}))
    assert engine.name == "vllm"


def test_greedy_reruns_are_bitwise_identical(engine) -> None:
    first = engine.generate(PROMPTS, GREEDY, top_k=K, logprob_mode="raw")
    second = engine.generate(PROMPTS, GREEDY, top_k=K, logprob_mode="raw")
    assert [encode(r) for r in first] == [encode(r) for r in second]  # Tier 1 and Tier 2 at batch size 4
    alone = [engine.generate([p], GREEDY, top_k=K, logprob_mode="raw")[0] for p in PROMPTS[:2]]
    alone_again = [engine.generate([p], GREEDY, top_k=K, logprob_mode="raw")[0] for p in PROMPTS[:2]]
    assert [encode(r) for r in alone] == [encode(r) for r in alone_again]  # and at batch size 1
    assert all(len(r.token_ids) == GREEDY.max_new_tokens or r.finish_reason == "stop" for r in first)


def test_rows_follow_the_trace_format(engine, model_dir: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    rows = engine.generate(PROMPTS, GREEDY, top_k=K, logprob_mode="raw")
    header = header_for(engine, GREEDY)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for prompt, row in zip(PROMPTS, rows):
        assert list(row_problems(row, header)) == []
        assert row.prompt_id == prompt.id
        expected_ids = list(prompt.token_ids) if prompt.token_ids else tokenizer(prompt.text)["input_ids"]
        assert row.input_token_ids == expected_ids
        assert row.prompt == prompt.text
        for i, (token, value, step) in enumerate(zip(row.token_ids, row.logprobs, row.top_logprobs)):
            assert len(step) == K, f"step {i}"
            assert step == sorted(step, key=lambda e: (-e[1], e[0]))
            # Greedy: the chosen token is the most likely one.
            assert step[0] == (token, value)
        ids = set(row.token_ids) | {t for step in row.top_logprobs for t, _ in step}
        assert set(row.token_texts) == ids
        assert all(row.token_texts[t] == tokenizer.decode([t]) for t in row.token_ids)
    path = write_trace(tmp_path / "trace.jsonl", header, rows)
    result = validate_trace(path)
    assert result.findings == [] and result.complete and result.rows == len(PROMPTS)


def test_sampled_token_outside_the_top_k_is_normalised(engine) -> None:
    """vLLM adds the sampled token as entry k+1 when it lies outside the top-k."""
    from detllm.capture.vllm import _normalise_step, _row_from_output

    k = 1
    decoding = sampling(seed=3, temperature=2.0)
    params = [engine._sampling_params(p, engine.resolve_decoding(decoding), k) for p in PROMPTS]
    outputs = engine._run_batch([engine._engine_prompt(p) for p in PROMPTS], params)
    outside = 0
    for prompt, output in zip(PROMPTS, outputs):
        completion = output.outputs[0]
        row = _row_from_output(prompt, output, k)
        for token, entries, value, step in zip(completion.token_ids, completion.logprobs, row.logprobs, row.top_logprobs):
            assert value == entries[token].logprob
            assert len(step) == 1
            best = min(entries.items(), key=lambda item: item[1].rank)
            assert step == [(best[0], best[1].logprob)]
            if len(entries) == k + 1:
                outside += 1
                assert entries[token].rank > k
                assert token not in dict(step)
            else:
                assert len(entries) == k and step == [(token, value)]
    assert outside > 0, "no step sampled a token outside the top-1: the case was not exercised"
    # The same entries with k = 0: only the chosen token's logprob remains.
    entries = outputs[0].outputs[0].logprobs[0]
    token = outputs[0].outputs[0].token_ids[0]
    assert _normalise_step(entries, token, 0) == (entries[token].logprob, [])


def test_seeded_sampling_repeats_and_seeds_diverge(engine) -> None:
    first = engine.generate(PROMPTS, sampling(seed=1), top_k=K, logprob_mode="raw")
    again = engine.generate(PROMPTS, sampling(seed=1), top_k=K, logprob_mode="raw")
    other = engine.generate(PROMPTS, sampling(seed=2), top_k=K, logprob_mode="raw")
    assert [encode(r) for r in first] == [encode(r) for r in again]
    assert [r.token_ids for r in first] != [r.token_ids for r in other]
    # Each prompt has its own generator: its draws do not depend on its neighbours.
    alone = engine.generate([PROMPTS[2]], sampling(seed=1), top_k=K, logprob_mode="raw")[0]
    assert alone.token_ids == first[2].token_ids


def test_batch_size_changes_what_the_scheduler_sees(engine) -> None:
    from detllm.capture.vllm import _spread

    assert engine.describe().settings["max_num_seqs"] == 4
    decoding = engine.resolve_decoding(GREEDY)
    prompts = [engine._engine_prompt(p) for p in PROMPTS]
    params = [engine._sampling_params(p, decoding, K) for p in PROMPTS]
    together = engine._run_batch(prompts, params)
    assert len({o.metrics.scheduled_ts for o in together}) == 1  # one scheduler step for all four
    one_by_one = [engine._run_batch([prompt], [param])[0] for prompt, param in zip(prompts, params)]
    assert len({o.metrics.scheduled_ts for o in one_by_one}) == 4
    assert _spread(together, False, 0) is None and _spread(together, True, 0) is None
    with pytest.raises(CaptureError, match="in 4 different steps"):
        _spread(one_by_one, False, 0)
    assert _spread(one_by_one, True, 0) == [0, 1, 2, 3]  # an engine that may spread a batch says how
    assert engine.describe().splits_batches is False  # no chunked prefill under a small budget here
    with pytest.raises(CaptureError, match="exceeds max_batch_size"):
        engine.generate([*PROMPTS, Prompt(id="fifth", text="one more")], GREEDY, top_k=K, logprob_mode="raw")


def test_settings_that_change_numerics_are_recorded(engine, model_dir: str) -> None:
    import vllm

    from detllm.capture.models import fingerprint, model_files, tokenizer_files

    description = engine.describe()
    settings = description.settings
    assert description.backend.name == "vllm"
    assert description.backend.version == vllm.__version__
    assert description.device == "cpu"
    assert description.dtype == "float32"
    assert description.model.fingerprint == fingerprint(model_files(Path(model_dir)))
    assert description.tokenizer.fingerprint == fingerprint(tokenizer_files(Path(model_dir)))
    assert description.model.fingerprint != description.tokenizer.fingerprint
    expected = {
        "logprobs_mode": "raw_logprobs",
        "batch_invariant": False,
        "enforce_eager": True,
        "engine_core": "child process",
        "max_num_seqs": 4,
        "max_model_len": 256,
        "tensor_parallel_size": 1,
        "dtype": "float32",
        "seed": 0,
    }
    assert {key: settings[key] for key in expected} == expected
    assert isinstance(settings["enable_prefix_caching"], bool)
    assert isinstance(settings["enable_chunked_prefill"], bool)
    assert settings["max_num_batched_tokens"] >= 256
    assert settings["attention_backend"] and all(isinstance(n, str) for n in settings["attention_backend"])
    assert settings["environment"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_unsupported_settings_raise(engine) -> None:
    with pytest.raises(CaptureError, match="greedy decoding ignores temperature=0.7"):
        engine.resolve_decoding(Decoding(do_sample=False, temperature=0.7, max_new_tokens=4))
    with pytest.raises(CaptureError, match="greedy decoding ignores top_k=5"):
        engine.generate(PROMPTS[:1], Decoding(do_sample=False, top_k=5, max_new_tokens=4), top_k=K, logprob_mode="raw")
    with pytest.raises(CaptureError, match="vLLM decodes greedily below it"):
        engine.resolve_decoding(sampling(seed=1, temperature=0.0))
    with pytest.raises(CaptureError, match="needs a seed"):
        engine.resolve_decoding(sampling(seed=None))  # type: ignore[arg-type]
    with pytest.raises(CaptureError, match="decoding setting 'repetition_penalty'"):
        engine.resolve_decoding(Decoding(do_sample=False, max_new_tokens=4, extra={"repetition_penalty": 1.1}))
    with pytest.raises(CaptureError, match="fixes logprobs_mode"):
        engine.generate(PROMPTS[:1], GREEDY, top_k=K, logprob_mode="processed")
    with pytest.raises(CaptureError, match="top logprobs must be between 0 and 20"):
        engine.generate(PROMPTS[:1], GREEDY, top_k=21, logprob_mode="raw")
    with pytest.raises(CaptureError, match="outside the vocabulary"):
        engine.generate([Prompt(id="bad", token_ids=(10**6,))], GREEDY, top_k=K, logprob_mode="raw")


def test_refusals_before_an_engine_starts(model_dir: str) -> None:
    from detllm.capture.vllm import VLLMBackend

    with pytest.raises(DeterminismUnavailableError, match="no batch-invariant mode on CPU"):
        VLLMBackend(BackendConfig(model=model_dir, options={"batch_invariant": True}))
    with pytest.raises(CaptureError, match="this vLLM build runs on 'cpu'"):
        VLLMBackend(BackendConfig(model=model_dir, device="cuda"))
    with pytest.raises(CaptureError, match="does not support dtype 'int8'"):
        VLLMBackend(BackendConfig(model=model_dir, dtype="int8"))
    with pytest.raises(CaptureError, match="applies to hub ids"):
        VLLMBackend(BackendConfig(model=model_dir, revision="main"))


def test_close_ends_the_engine_processes(engine) -> None:
    pids = engine.engine_pids
    assert pids, "the engine core should run in a child process by default"
    assert all(psutil.pid_exists(pid) for pid in pids)
    engine.close()
    gone = []
    for pid in pids:
        try:
            gone.append(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            gone.append(True)
    assert all(gone)
    with pytest.raises(CaptureError, match="closed"):
        engine.generate(PROMPTS[:1], GREEDY, top_k=K, logprob_mode="raw")

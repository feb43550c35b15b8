"""The Hugging Face backend on the fixture models: what it records and how."""

from __future__ import annotations

import math

import pytest

from detllm.capture.backend import Prompt
from detllm.capture.prompts import DEFAULT_PROMPTS, prompts_from_texts
from detllm.errors import CaptureError
from detllm.trace import Decoding

pytestmark = pytest.mark.hf

GREEDY = Decoding(do_sample=False, max_new_tokens=12)
PROMPTS = prompts_from_texts(DEFAULT_PROMPTS)


def sampling(seed: int, **settings) -> Decoding:
    return Decoding(do_sample=True, max_new_tokens=12, seed=seed, **settings)


def test_generated_tokens_are_those_of_model_generate(load):
    torch = pytest.importorskip("torch")
    for name in ("tiny-gpt2", "tiny-llama"):
        backend = load(name)
        rows = backend.generate(PROMPTS, GREEDY, top_k=5, logprob_mode="raw")
        tokenizer = backend.tokenizer
        tokenizer.padding_side = "left"
        encoded = tokenizer([p.text for p in PROMPTS], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = backend.model.generate(**encoded, do_sample=False, max_new_tokens=12, pad_token_id=backend.pad_id)
        expected = out[:, encoded["input_ids"].shape[1] :].tolist()
        for row, tokens in zip(rows, expected):
            assert row.token_ids == tokens[: len(row.token_ids)], (name, row.prompt_id)


def test_input_ids_are_the_prompt_without_padding(load):
    backend = load("tiny-llama")
    rows = backend.generate(PROMPTS, GREEDY, top_k=5, logprob_mode="raw")
    for prompt, row in zip(PROMPTS, rows):
        assert row.input_token_ids == backend.tokenizer(prompt.text)["input_ids"]
        assert backend.pad_id not in row.input_token_ids
        assert row.prompt == prompt.text
        assert 1 <= len(row.token_ids) <= GREEDY.max_new_tokens
    # Prompts of different lengths were padded in this batch, and padding went first.
    assert len({len(row.input_token_ids) for row in rows}) > 1


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_padding_never_changes_the_tokens(load, name):
    backend = load(name)
    short = Prompt("short", "Water boils at")
    longer = [Prompt(f"long{i}", text) for i, text in enumerate(DEFAULT_PROMPTS[:7])]
    alone = backend.generate([short], GREEDY, top_k=5, logprob_mode="raw")[0]
    for position in (0, 3, 7):
        batch = [*longer[:position], short, *longer[position:]]
        assert max(len(backend.tokenizer(p.text)["input_ids"]) for p in batch) > len(alone.input_token_ids)
        together = backend.generate(batch, GREEDY, top_k=5, logprob_mode="raw")[position]
        assert together.prompt_id == "short"
        assert together.input_token_ids == alone.input_token_ids
        assert together.token_ids == alone.token_ids
        assert max(abs(a - b) for a, b in zip(alone.logprobs, together.logprobs)) < 1e-4


def test_logprobs_are_those_of_a_full_forward_pass(load):
    torch = pytest.importorskip("torch")
    backend = load("tiny-llama")
    row = backend.generate([PROMPTS[1]], GREEDY, top_k=5, logprob_mode="raw")[0]
    sequence = torch.tensor([row.input_token_ids + row.token_ids])
    with torch.inference_mode():
        logits = backend.model(input_ids=sequence).logits[0].float()
    start = len(row.input_token_ids) - 1
    expected = torch.log_softmax(logits[start : start + len(row.token_ids)], dim=-1)
    for step, token in enumerate(row.token_ids):
        assert token == int(expected[step].argmax())
        assert math.isclose(row.logprobs[step], float(expected[step, token]), abs_tol=1e-4)
        top_ids = [t for t, _ in row.top_logprobs[step]]
        assert top_ids[0] == token
        assert set(top_ids) == set(expected[step].topk(5).indices.tolist())


def test_stops_at_eos_and_keeps_it(load):
    plain = load("tiny-llama").generate([PROMPTS[0]], GREEDY, top_k=5, logprob_mode="raw")[0]
    assert plain.finish_reason == "length"
    assert len(plain.token_ids) == GREEDY.max_new_tokens
    stop = plain.token_ids[4]
    end = plain.token_ids.index(stop) + 1
    backend = load("tiny-llama", eos_token_ids=[stop])
    row = backend.generate([PROMPTS[0], PROMPTS[1]], GREEDY, top_k=5, logprob_mode="raw")[0]
    assert row.finish_reason == "stop"
    assert row.token_ids == plain.token_ids[:end]
    assert row.token_ids[-1] == stop
    assert len(row.logprobs) == len(row.top_logprobs) == end
    assert backend.describe().settings["eos_token_ids"] == [stop]


def test_top_logprobs_are_sorted_and_hold_the_chosen_token(load):
    row = load("tiny-gpt2").generate(PROMPTS[:2], GREEDY, top_k=7, logprob_mode="raw")[0]
    for step, token in enumerate(row.token_ids):
        entries = row.top_logprobs[step]
        assert len(entries) == 7
        assert entries[0] == (token, row.logprobs[step])
        assert [v for _, v in entries] == sorted((v for _, v in entries), reverse=True)
    assert set(row.token_texts) == set(row.token_ids) | {t for step in row.top_logprobs for t, _ in step}


def test_seeded_sampling_repeats_and_other_seeds_diverge(load):
    backend = load("tiny-llama")
    first = backend.generate(PROMPTS, sampling(1), top_k=5, logprob_mode="raw")
    again = backend.generate(PROMPTS, sampling(1), top_k=5, logprob_mode="raw")
    other = backend.generate(PROMPTS, sampling(2), top_k=5, logprob_mode="raw")
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    assert [r.logprobs for r in first] == [r.logprobs for r in again]
    assert sum(a.token_ids != b.token_ids for a, b in zip(first, other)) >= len(PROMPTS) // 2


def test_sampling_draws_do_not_depend_on_the_neighbours(load):
    backend = load("tiny-llama")
    batched = backend.generate(PROMPTS, sampling(3), top_k=5, logprob_mode="raw")
    alone = [backend.generate([p], sampling(3), top_k=5, logprob_mode="raw")[0] for p in PROMPTS]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]


def test_processed_logprobs_follow_the_sampling_transforms(load):
    backend = load("tiny-llama")
    decoding = sampling(5, temperature=0.7, top_k=3)
    processed = backend.generate(PROMPTS[:2], decoding, top_k=5, logprob_mode="processed")
    raw = backend.generate(PROMPTS[:2], decoding, top_k=5, logprob_mode="raw")
    for p_row, r_row in zip(processed, raw):
        assert p_row.token_ids == r_row.token_ids  # what is recorded does not change what is drawn
        for step, token in enumerate(p_row.token_ids):
            entries = p_row.top_logprobs[step]
            finite = [(t, v) for t, v in entries if v != -math.inf]
            assert len(finite) <= 3  # top-k 3 leaves three tokens possible
            assert token in {t for t, _ in finite}
            assert math.isclose(sum(math.exp(v) for _, v in finite), 1.0, abs_tol=1e-4)
            # Temperature 0.7 sharpens: the chosen token is likelier than in the raw logprobs.
            assert p_row.logprobs[step] >= r_row.logprobs[step] - 1e-6


def test_greedy_refuses_sampling_settings(load):
    backend = load("tiny-gpt2")
    with pytest.raises(CaptureError) as info:
        backend.generate(PROMPTS[:1], Decoding(do_sample=False, max_new_tokens=4, temperature=0.5), top_k=5, logprob_mode="raw")
    assert str(info.value) == "greedy decoding ignores temperature=0.5: turn sampling on (do_sample) or leave temperature at 1.0"
    with pytest.raises(CaptureError, match="greedy decoding ignores top_k=40"):
        backend.resolve_decoding(Decoding(do_sample=False, max_new_tokens=4, top_k=40))


@pytest.mark.parametrize(
    ("decoding", "message"),
    [
        (Decoding(do_sample=True, max_new_tokens=4, temperature=0.0, seed=1), "sampling needs a temperature > 0, got 0.0"),
        (Decoding(do_sample=True, max_new_tokens=4, seed=None), "sampling needs a seed"),
        (Decoding(do_sample=True, max_new_tokens=4, seed=1, extra={"repetition_penalty": 1.2}), "does not support the decoding setting 'repetition_penalty'"),
    ],
)
def test_settings_the_backend_cannot_honour_are_errors(load, decoding, message):
    with pytest.raises(CaptureError, match=message):
        load("tiny-gpt2").resolve_decoding(decoding)


def test_greedy_records_no_seed(load):
    resolved = load("tiny-gpt2").resolve_decoding(Decoding(do_sample=False, max_new_tokens=4, seed=7))
    assert resolved.seed is None
    sampled = load("tiny-gpt2").resolve_decoding(sampling(7, top_p=0.9))
    assert (sampled.seed, sampled.top_p, sampled.temperature) == (7, 0.9, 1.0)


def test_prompts_given_as_token_ids(load):
    backend = load("tiny-llama")
    ids = tuple(backend.tokenizer("Hello world")["input_ids"])
    by_ids = backend.generate([Prompt("ids", token_ids=ids)], GREEDY, top_k=2, logprob_mode="raw")[0]
    by_text = backend.generate([Prompt("text", "Hello world")], GREEDY, top_k=2, logprob_mode="raw")[0]
    assert by_ids.input_token_ids == list(ids)
    assert by_ids.token_ids == by_text.token_ids
    assert by_ids.prompt is None
    with pytest.raises(CaptureError, match=r"prompt 'bad': token id 512 is outside the vocabulary \(0..511\)"):
        backend.generate([Prompt("bad", token_ids=(5, 512))], GREEDY, top_k=2, logprob_mode="raw")


def test_prompt_longer_than_the_model_allows(load):
    with pytest.raises(CaptureError, match="exceed the model's 256 positions"):
        load("tiny-llama").generate([Prompt("long", "word " * 300)], GREEDY, top_k=2, logprob_mode="raw")


def test_describe_fingerprints_and_settings(load):
    description = load("tiny-llama").describe()
    assert description.backend.name == "transformers"
    assert description.model.fingerprint.startswith("sha256:")
    assert description.tokenizer.fingerprint.startswith("sha256:")
    assert description.model.fingerprint != load("tiny-gpt2").describe().model.fingerprint
    # Same tokenizer files in both fixture models.
    assert description.tokenizer.fingerprint == load("tiny-gpt2").describe().tokenizer.fingerprint
    settings = description.settings
    assert settings["attn_implementation"] == "sdpa"
    assert settings["padding_side"] == "left"
    assert settings["eos_token_ids"] == [0] and settings["pad_token_id"] == 1
    assert description.dtype == "float32" and description.device == "cpu"


def test_attention_implementation_is_recorded(load):
    eager = load("tiny-llama", attn_implementation="eager")
    assert eager.describe().settings["attn_implementation"] == "eager"
    assert eager.describe().settings["options"] == {"attn_implementation": "eager"}
    rows = eager.generate(PROMPTS[:2], GREEDY, top_k=2, logprob_mode="raw")
    assert [len(r.token_ids) for r in rows] == [12, 12]


def test_unknown_option_and_dtype_are_refused():
    pytest.importorskip("torch")
    from detllm.capture.hf import HFBackend
    from detllm.capture.registry import BackendConfig

    with pytest.raises(CaptureError, match="the hf backend has no option 'beam_width'"):
        HFBackend(BackendConfig(model="tiny-llama", options={"beam_width": 4}))
    with pytest.raises(CaptureError, match="does not support dtype 'int3'"):
        HFBackend(BackendConfig(model="tiny-llama", dtype="int3"))


def test_bfloat16_runs(load):
    pytest.importorskip("torch")
    from detllm.capture.hf import HFBackend
    from detllm.capture.registry import BackendConfig

    backend = HFBackend(BackendConfig(model="tiny-llama", dtype="bfloat16", device="cpu"))
    try:
        rows = backend.generate(PROMPTS[:2], GREEDY, top_k=3, logprob_mode="raw")
        assert backend.describe().dtype == "bfloat16"
        for row in rows:
            assert len(row.token_ids) == 12 or (row.finish_reason == "stop" and row.token_ids[-1] == 0)
            assert all(isinstance(v, float) and v <= 0 for v in row.logprobs)
    finally:
        backend.close()


def test_flip_model_diverges_only_at_near_ties(load):
    """Whether batch size flips a token depends on the CPU's kernels; what holds
    everywhere is that any divergence starts at a near tie of a duplicated pair."""
    backend = load("tiny-flip")
    decoding = Decoding(do_sample=False, max_new_tokens=16)
    batched = backend.generate(PROMPTS, decoding, top_k=5, logprob_mode="raw")
    assert [r.token_ids for r in batched] == [r.token_ids for r in backend.generate(PROMPTS, decoding, top_k=5, logprob_mode="raw")]
    alone = [backend.generate([p], decoding, top_k=5, logprob_mode="raw")[0] for p in PROMPTS]
    for a, b in zip(alone, batched):
        step = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
        if step is None:
            continue
        low, high = sorted((a.token_ids[step], b.token_ids[step]))
        assert low % 2 == 0 and high == low + 1  # a duplicated pair of output rows
        for row in (a, b):
            first, second = row.top_logprobs[step][:2]
            assert first[1] - second[1] < 1e-5

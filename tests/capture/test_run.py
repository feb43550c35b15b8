"""``detllm run``, ``detllm.run`` and capture sessions on the fixture models."""

from __future__ import annotations

import json
import os
import sys

import pytest

import detllm
from detllm import open_trace, validate_trace
from detllm.capture.prompts import DEFAULT_PROMPTS, prompts_from_texts
from detllm.capture.registry import BackendConfig
from detllm.capture.runner import CaptureSession, make_batches
from detllm.cli import main
from detllm.errors import CaptureError, UsageError
from detllm.trace import Decoding

pytestmark = pytest.mark.hf

PROMPTS = prompts_from_texts(DEFAULT_PROMPTS)


@pytest.fixture(autouse=True, scope="module")
def _needs_torch():
    # Module scope: it runs before the module-scoped fixtures that load a model.
    pytest.importorskip("torch")


def row_lines(path) -> list[bytes]:
    with open_trace(path) as reader:
        return [raw for _, raw in reader.raw_rows()]


@pytest.fixture(scope="module")
def llama_session():
    pytest.importorskip("torch")
    with CaptureSession(BackendConfig(model="tiny-llama", device="cpu"), mode="strict", seed=0) as session:
        yield session


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-flip"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_repeated_runs_are_tier1_and_tier2_repeatable(tmp_path, name, batch_size):
    decoding = Decoding(do_sample=False, max_new_tokens=10)
    with CaptureSession(BackendConfig(model=name, device="cpu"), mode="strict") as session:
        paths = [
            session.capture(PROMPTS, decoding, batch_size=batch_size, path=tmp_path / f"run{i}.jsonl", keep_rows=False).path
            for i in range(3)
        ]
    first = row_lines(paths[0])
    assert len(first) == len(PROMPTS)
    for path in paths[1:]:
        assert row_lines(path) == first  # same bytes: same tokens (Tier 1) and same logprobs (Tier 2)


def test_sampled_runs_repeat_with_the_seed(llama_session, tmp_path):
    decoding = Decoding(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=10, seed=11)
    one = llama_session.capture(PROMPTS, decoding, batch_size=4, path=tmp_path / "a.jsonl")
    two = llama_session.capture(PROMPTS, decoding, batch_size=4, path=tmp_path / "b.jsonl")
    assert row_lines(one.path) == row_lines(two.path)
    assert one.header.decoding == Decoding(do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=10, seed=11)


def test_rows_follow_prompt_order_whatever_the_composition(llama_session):
    decoding = Decoding(do_sample=False, max_new_tokens=6)
    in_order = llama_session.capture(PROMPTS, decoding, batch_size=3).rows
    for composition in ("reversed", "shuffled:4"):
        capture = llama_session.capture(PROMPTS, decoding, batch_size=3, composition=composition)
        assert capture.header.batch.composition == composition
        assert [r.prompt_id for r in capture.rows] == [p.id for p in PROMPTS]
        assert [r.token_ids for r in capture.rows] == [r.token_ids for r in in_order]
        batches = make_batches(len(PROMPTS), 3, composition)
        for index, members in enumerate(batches):
            for position, member in enumerate(members):
                placement = capture.rows[member].batch
                assert (placement.index, placement.position, placement.size) == (index, position, len(members))


def test_make_batches():
    assert make_batches(5, 2, "in-order") == [[0, 1], [2, 3], [4]]
    assert make_batches(5, 2, "reversed") == [[4, 3], [2, 1], [0]]
    assert sorted(sum(make_batches(5, 2, "shuffled:1"), [])) == [0, 1, 2, 3, 4]
    assert make_batches(5, 2, "shuffled:1") == make_batches(5, 2, "shuffled:1")
    with pytest.raises(UsageError, match="unknown batch composition 'random'"):
        make_batches(5, 2, "random")
    with pytest.raises(UsageError, match="the shuffle seed must be an integer"):
        make_batches(5, 2, "shuffled:x")


def test_header_records_the_capture(llama_session):
    capture = llama_session.capture(PROMPTS[:2], Decoding(do_sample=False, max_new_tokens=4), batch_size=2, top_logprobs=3, logprobs="processed", labels={"run": "1"})
    header = capture.header
    assert header.producer.name == "detllm"
    assert header.model.id == "tiny-llama" and header.model.fingerprint.startswith("sha256:")
    assert (header.batch.size, header.logprobs.semantics, header.logprobs.top_k) == (2, "processed", 3)
    assert header.determinism.mode == "strict"
    assert header.determinism.applied["torch_use_deterministic_algorithms"] is True
    assert header.environment.fingerprint == llama_session.environment.fingerprint
    assert header.backend_settings["deterministic_algorithms"] is True
    assert header.labels == {"run": "1"}
    assert all(len(step) == 3 for step in capture.rows[0].top_logprobs)


def test_failed_capture_leaves_a_partial_trace(llama_session, tmp_path):
    bad = [*PROMPTS[:2], detllm.capture.backend.Prompt("huge", "word " * 400)]
    with pytest.raises(CaptureError, match="prompt 'huge'"):
        llama_session.capture(bad, Decoding(do_sample=False, max_new_tokens=4), batch_size=1, path=tmp_path / "t.jsonl")
    assert not (tmp_path / "t.jsonl").exists()
    with open_trace(tmp_path / "t.jsonl.partial", allow_incomplete=True) as reader:
        assert [row.prompt_id for row in reader] == ["p1", "p2"]
        assert not reader.complete


def test_cli_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", "tiny-llama", "--device", "cpu", "--max-new-tokens", "5", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["determinism_applied.json", "env.json", "run_config.json", "trace.jsonl"]
    assert validate_trace(out / "trace.jsonl").valid
    config = json.loads((out / "run_config.json").read_text())
    assert config["command"] == ["detllm", "run", "--model", "tiny-llama", "--device", "cpu", "--max-new-tokens", "5", "--batch-size", "4", "--out", str(out)]
    assert config["config"]["batch_size"] == 4
    assert [p["prompt"] for p in config["prompts"]] == list(DEFAULT_PROMPTS)
    env = json.loads((out / "env.json").read_text())
    with open_trace(out / "trace.jsonl") as reader:
        assert reader.header.environment.fingerprint == env["fingerprint"]
        rows = list(reader)
    assert [r.prompt for r in rows] == list(DEFAULT_PROMPTS)
    output = capsys.readouterr().out
    assert output.startswith(f"{out}: 8 prompts, ")
    assert "model tiny-llama (sha256:" in output and output.endswith("batch size 4; determinism best-effort\n")


def test_cli_run_with_prompts_and_sampling(tmp_path):
    out = tmp_path / "run"
    code = main(
        ["run", "--model", "tiny-gpt2", "--device", "cpu", "--prompt", "Hello", "--prompt", "Bonjour",
         "--do-sample", "--temperature", "0.8", "--top-k", "20", "--seed", "4", "--max-new-tokens", "5",
         "--top-logprobs", "2", "--logprobs", "processed", "--backend-option", "attn_implementation=eager",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    with open_trace(out / "trace.jsonl") as reader:
        header = reader.header
        rows = list(reader)
    assert [r.prompt for r in rows] == ["Hello", "Bonjour"]
    assert header.decoding == Decoding(do_sample=True, temperature=0.8, top_k=20, max_new_tokens=5, seed=4)
    assert header.logprobs.semantics == "processed"
    assert header.backend_settings["attn_implementation"] == "eager"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--temperature", "0.5"], "detllm: greedy decoding ignores temperature=0.5: turn sampling on (do_sample) or leave temperature at 1.0\n"),
        (["--composition", "sorted"], "detllm: unknown batch composition 'sorted' (choose from in-order, reversed, shuffled:SEED)\n"),
        (["--backend-option", "eager"], "detllm: --backend-option 'eager': expected KEY=VALUE\n"),
        (["--dtype", "int4"], "detllm: the hf backend does not support dtype 'int4' (choose from float32, bfloat16, float16)\n"),
    ],
)
def test_cli_run_usage_errors(tmp_path, capsys, arguments, message):
    code = main(["run", "--model", "tiny-gpt2", "--device", "cpu", "--max-new-tokens", "2", "--out", str(tmp_path / "r"), *arguments])
    assert code == 2
    assert capsys.readouterr().err == message


def test_cli_run_refuses_a_used_directory(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("keep me")
    assert main(["run", "--model", "tiny-gpt2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"detllm: {tmp_path}: directory is not empty; choose another --out or remove it\n"
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_cli_run_unknown_model(tmp_path, capsys):
    assert main(["run", "--model", "./no/such/model", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "detllm: model directory './no/such/model' does not exist\n"
    assert main(["run", "--model", "someone/not-cached-model-xyz", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detllm: model 'someone/not-cached-model-xyz' is not a built-in model (tiny-gpt2, tiny-llama, tiny-flip, smollm2-135m), not a local directory, and not in the local Hugging Face cache; detLLM never downloads models")


def test_python_api_run(tmp_path):
    result = detllm.run("tiny-llama", ["The capital of France is", "Hi"], max_new_tokens=4, batch_size=2, device="cpu", out=tmp_path / "r")
    assert [r.prompt_id for r in result.rows] == ["p1", "p2"]
    assert result.trace_path == tmp_path / "r" / "trace.jsonl"
    assert result.determinism.complete
    assert result.environment.fingerprint == result.header.environment.fingerprint
    with open_trace(result.trace_path) as reader:
        assert list(reader) == result.rows
    memory_only = detllm.run("tiny-llama", ["The capital of France is", "Hi"], max_new_tokens=4, batch_size=2, device="cpu")
    assert memory_only.directory is None and memory_only.trace_path is None
    assert memory_only.rows == result.rows
    with pytest.raises(UsageError, match="detllm.run: Unexpected keyword argument 'batchsize'"):
        detllm.run("tiny-llama", batchsize=2)


def test_run_restores_global_state():
    torch = pytest.importorskip("torch")
    before = (torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.get_num_threads())
    detllm.run("tiny-gpt2", ["Hi"], max_new_tokens=2, device="cpu", mode="strict", threads=1)
    assert (torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.get_num_threads()) == before


def test_module_entry_point_in_a_fresh_process(tmp_path):
    import subprocess

    from detllm.capture.models import checkout_root

    root = checkout_root()
    out = tmp_path / "r"
    result = subprocess.run(
        [sys.executable, "-m", "detllm", "run", "--model", "tiny-flip", "--prompt", "Hello", "--max-new-tokens", "3", "--out", str(out)],
        capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (out / "trace.jsonl").is_file()


def _racers(command: list[str]) -> list[tuple[int, str]]:
    import subprocess
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env) for _ in range(2)]
    return sorted((p.wait(timeout=300), p.stderr.read().strip()) for p in procs)  # type: ignore[union-attr]


def test_two_runs_racing_into_one_directory_one_refuses(tmp_path) -> None:
    out = tmp_path / "run"
    finished = _racers([sys.executable, "-m", "detllm", "run", "--model", "tiny-gpt2", "--device", "cpu",
                        "--max-new-tokens", "4", "--out", str(out)])  # fmt: skip
    assert [code for code, _ in finished] == [0, 2]
    assert finished[1][1].startswith(f"detllm: {out}: ") and "\n" not in finished[1][1]
    assert validate_trace(out / "trace.jsonl").valid
    assert sorted(p.name for p in out.iterdir()) == ["determinism_applied.json", "env.json", "run_config.json", "trace.jsonl"]


def test_two_checks_racing_into_one_directory_one_refuses(tmp_path) -> None:
    out = tmp_path / "check"
    finished = _racers([sys.executable, "-m", "detllm", "check", "--model", "tiny-gpt2", "--device", "cpu",
                        "--max-new-tokens", "4", "--batch-size", "1,2", "--out", str(out), "-q"])  # fmt: skip
    assert sorted(code for code, _ in finished)[1] == 2 and sorted(code for code, _ in finished)[0] in (0, 1)
    assert finished[-1][1].startswith(f"detllm: {out}: ") and "\n" not in finished[-1][1]
    assert main(["validate", str(out / "traces"), "-q"]) == 0
    assert not (out / ".detllm-claim").exists()

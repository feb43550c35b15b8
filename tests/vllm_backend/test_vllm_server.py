"""``--backend openai`` against a real vLLM server on a loopback port (``-m vllm``).

The server starts once per module (about 40 s for the tiny model) from this
interpreter, the vLLM environment's, and is always stopped at the end. The SmolLM2
test starts a server of its own (``-m "vllm and smollm"``, about 2 minutes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from _vllm_fixtures import ROOT, vllm_installed  # noqa: E402

if not vllm_installed():
    pytest.skip("vLLM is not installed", allow_module_level=True)

from detllm import open_trace, validate_trace  # noqa: E402
from detllm.capture.backend import ForcedSequence  # noqa: E402
from detllm.capture.openai import OpenAIBackend  # noqa: E402
from detllm.capture.registry import BackendConfig  # noqa: E402
from detllm.cli import main  # noqa: E402
from detllm.diff import diff_traces  # noqa: E402

pytestmark = pytest.mark.vllm

TOKENS = 8
NAME = "tiny-llama"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment() -> dict[str, str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    env.pop("OMP_NUM_THREADS", None)  # the server's engine sets its own
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def _start(model: str, name: str, *extra: str, timeout: float = 420.0) -> Iterator[str]:
    """A vLLM server on 127.0.0.1; yields its URL and kills it (and its engine) afterwards."""
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"detllm-vllm-server-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--enforce-eager", "--max-model-len", "256", "--served-model-name", name, *extra],
        env=_environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.flush()
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                pytest.fail(f"the vLLM server exited with status {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer within {timeout:.0f} s")
            time.sleep(1.0)
        yield url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(model_dir: str) -> Iterator[str]:
    yield from _start(model_dir, NAME, "--dtype", "float32")


@pytest.fixture(scope="module")
def server_check(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("server") / "check"
    code = main(["check", "--backend", "openai", "--base-url", server, "--model", NAME, "--runs", "2",
                 "--concurrency", "1,8", "--max-new-tokens", str(TOKENS), "--out", str(out), "-q"])
    assert code in (0, 1)
    return out


def test_check_at_1_and_8_in_flight_writes_a_full_repro_pack(server_check: Path, tmp_path: Path) -> None:
    out = server_check
    report = json.loads((out / "report.json").read_text())
    for name in ("env.json", "run_config.json", "determinism_applied.json", "report.txt", "report.md",
                 "diffs/first_divergence.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert [r["name"] for r in report["runs"]] == ["c1-run0", "c1-run1", "c8-run0", "c8-run1"]
    for run in report["runs"]:
        assert validate_trace(out / run["trace"]["path"]).valid
    with open_trace(out / "traces" / "c8-run0.jsonl") as trace:
        header = trace.header
    assert header.backend_settings["token_ids"] == "server" and header.backend_settings["concurrency"] == 8
    assert NAME in header.backend_settings["server"]["models"]
    assert header.backend_settings["server"]["version"]  # vLLM's /version
    levels = [level["concurrency"] for level in report["concurrency"]["levels"]]
    assert levels == [1, 8]
    # tiny-llama in float32 on this CPU: the same tokens however many are in flight.
    assert report["verdict"]["tier1"] is True and report["verdict"]["concurrency_invariant"] is True
    assert main(["pack", str(out), "--out", str(tmp_path / "pack"), "--all"]) == 0
    assert "--concurrency 1,8" in (tmp_path / "pack" / "README.md").read_text()


def test_server_trace_matches_the_in_process_vllm_trace(server_check: Path, model_dir: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    done = subprocess.run(
        [sys.executable, "-m", "detllm", "run", "--model", model_dir, "--backend", "vllm", "--device", "cpu",
         "--max-new-tokens", str(TOKENS), "--backend-option", "max_model_len=256", "--out", str(local)],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = diff_traces(local / "trace.jsonl", server_check / "traces" / "c1-run0.jsonl")
    assert report.summary.statuses["inputs_differ"] == 0
    assert report.verdict.tier1, [p.classification for p in report.diverging()]
    with open_trace(local / "trace.jsonl") as a, open_trace(server_check / "traces" / "c1-run0.jsonl") as b:
        left, right = list(a), list(b)
    assert [r.token_ids for r in left] == [r.token_ids for r in right]
    assert [r.input_token_ids for r in left] == [r.input_token_ids for r in right]


def test_score_ranks_a_greedy_trace_s_tokens_first(server: str, server_check: Path) -> None:
    with open_trace(server_check / "traces" / "c1-run0.jsonl") as trace:
        rows = list(trace)[:3]
    backend = OpenAIBackend(BackendConfig(model=NAME, options={"base_url": server}))
    try:
        steps = backend.score(
            [ForcedSequence(prompt_id=r.prompt_id, input_ids=tuple(r.input_token_ids), forced_ids=tuple(r.token_ids)) for r in rows],
            top_k=3,
        )
    finally:
        backend.close()
    for row, forced in zip(rows, steps):
        assert len(forced) == len(row.token_ids)
        assert [s.rank for s in forced] == [1] * len(forced)
        assert [s.top_ids[0] for s in forced] == row.token_ids
        assert row.logprobs is not None
        assert max(abs(s.logprob - lp) for s, lp in zip(forced, row.logprobs)) < 1e-3


@pytest.mark.smollm
def test_smollm2_in_bfloat16_depends_on_concurrency(tmp_path: Path) -> None:
    from detllm.capture._smollm import cache_dir, converted_dir, gguf_path
    from detllm.errors import CaptureError

    # The converted model, from this environment or (the vLLM one has no gguf) from the cache
    # another environment converted it into.
    model = None
    if gguf_path() is not None and importlib.util.find_spec("gguf") is not None:
        try:
            model = str(converted_dir())
        except CaptureError:
            model = None
    if model is None and (cache_dir() / "config.json").is_file():
        model = str(cache_dir())
    if model is None:
        pytest.skip("SmolLM2-135M is neither convertible here nor converted in the cache (detllm run --model smollm2-135m)")
    for url in _start(model, "smollm2", "--dtype", "bfloat16", timeout=600):
        out = tmp_path / "check"
        code = main(["check", "--backend", "openai", "--base-url", url, "--model", "smollm2", "--runs", "4",
                     "--concurrency", "1,8,32", "--max-new-tokens", "32", "--dtype", "bfloat16", "--replay",
                     "--out", str(out), "-q"])
        report = json.loads((out / "report.json").read_text())
        assert code == 1
        assert report["verdict"]["concurrency_invariant"] is False, report["verdict"]["text"]
        crowded = [level for level in report["concurrency"]["levels"] if level["concurrency"] > 1]
        assert any(level["odd"] >= 1 and level["low"] > 0 for level in crowded)
        minorities = [m for p in report["concurrency"]["prompts"] for m in p["minorities"]]
        assert any(level > 1 for m in minorities for level in m["levels"])
        assert "not concurrency invariant" in (out / "report.txt").read_text().replace("\n", " ")
        # --replay: every divergence measured by the server itself at both levels.
        replay = report["replay"]
        flips = sum(d["result"]["status"] == "tokens_diverge" for p in report["prompts"] for d in p["divergences"])
        assert flips and len(replay["margins"]) == flips and replay["unmeasured"] == []
        for margin in replay["margins"]:
            wide = max(abs(margin["left_setup"]["margin"]), abs(margin["right_setup"]["margin"])) > margin["tolerance"]
            assert (margin["verdict"] == "near_tie") == (not wide), margin
        levels = {r["name"]: r["concurrency"] for r in report["runs"]}
        for entry in json.loads((out / "replays" / "replays.json").read_text())["replays"]:
            with open_trace(out / entry["path"]) as reader:
                assert reader.header.backend_settings["concurrency"] == levels[entry["setup"]]
                assert reader.header.dtype == "bfloat16" and sum(1 for _ in reader) == entry["rows"]


def test_replay_through_the_server_agrees_with_the_hf_replay(server: str, server_check: Path, model_dir: str, tmp_path: Path) -> None:
    source = server_check / "traces" / "c1-run0.jsonl"
    hf, served = tmp_path / "hf.jsonl", tmp_path / "server.jsonl"
    assert main(["replay", str(source), "--backend", "openai", "--base-url", server, "--model", NAME,
                 "--concurrency", "4", "--out", str(served)]) == 0  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "detllm", "replay", str(source), "--model", model_dir, "--backend", "hf", "--device", "cpu",
         "--batch-size", "4", "--out", str(hf)],
        cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with open_trace(served) as a, open_trace(hf) as b:
        header, left, right = a.header, list(a), list(b)
    assert header.replay is not None and header.backend_settings["replay"]["method"].startswith("POST /v1/completions")
    worst = 0.0
    for x, y in zip(left, right, strict=True):
        assert x.token_ids == y.token_ids and x.ranks == y.ranks == [1] * len(x.token_ids)
        worst = max([worst, *(abs(p - q) for p, q in zip(x.logprobs, y.logprobs))])
    assert worst < 1e-4  # float32 on both sides, other kernels

"""``--backend openai`` against a small server the tests start on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detllm.capture.backend import ForcedSequence
from detllm.capture.openai import OpenAIBackend
from detllm.capture.registry import BackendConfig
from detllm.cli import main
from detllm.reader import open_trace

from .fake_server import MODEL, FakeServer, free_port

PROMPTS = ["--prompt", "hello", "--prompt", "world", "--prompt", "caf\u00e9 \U0001f642"]


def _run(url: str, out: Path, *extra: str) -> int:
    return main(["run", "--backend", "openai", "--base-url", url, "--model", MODEL, *PROMPTS,
                 "--max-new-tokens", "6", "--out", str(out), *extra])


def _check(url: str, out: Path, *extra: str) -> int:
    return main(["check", "--backend", "openai", "--base-url", url, "--model", MODEL, *PROMPTS,
                 "--max-new-tokens", "6", "--out", str(out), "-q", *extra])


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_run_records_server_ids_and_the_server_s_description(tmp_path: Path) -> None:
    with FakeServer(delay=0.05) as server:
        assert _run(server.url, tmp_path / "r", "--concurrency", "3") == 0
        assert server.max_in_flight >= 2
    with open_trace(tmp_path / "r" / "trace.jsonl") as trace:
        header, rows = trace.header, list(trace)
    settings = header.backend_settings
    assert header.backend.name == "openai" and header.backend.version == "fake-1.0"
    assert settings["concurrency"] == 3 and settings["token_ids"] == "server"
    assert settings["server"]["models"] == [MODEL] and settings["server"]["system_fingerprint"] == "fp-fake"
    assert settings["server"]["base_url"] == server.url
    assert settings["retries"]["connection_refused"] == 3
    assert [r.prompt_id for r in rows] == ["p1", "p2", "p3"]
    assert rows[2].input_token_ids == list("caf\u00e9 \U0001f642".encode())
    assert len(rows[0].token_ids) == 6 and rows[0].top_logprobs is not None and len(rows[0].top_logprobs[0]) == 5
    assert rows[0].logprobs == [step[0][1] for step in rows[0].top_logprobs]


def test_chat_uses_the_chat_endpoint_and_its_logprobs(tmp_path: Path) -> None:
    with FakeServer() as server:
        assert _run(server.url, tmp_path / "r", "--chat") == 0
    with open_trace(tmp_path / "r" / "trace.jsonl") as trace:
        header, rows = trace.header, list(trace)
    assert header.backend_settings["endpoint"] == "/v1/chat/completions"
    assert rows[0].input_token_ids == list(b"<user>hello")


def test_check_finds_a_concurrency_dependence(tmp_path: Path) -> None:
    out = tmp_path / "c"
    with FakeServer(delay=0.25, flip_when_crowded=True) as server:
        assert _check(server.url, out, "--runs", "2", "--concurrency", "1,6") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"]["tier1"] is True and report["verdict"]["concurrency_invariant"] is False
    levels = {r["concurrency"]: r for r in report["concurrency"]["levels"]}
    assert levels[1]["odd"] == 0 and levels[1]["completions"] == 6
    assert levels[6]["odd"] >= 4 and levels[6]["low"] > 0.2  # requests that find the server alone keep their tokens
    first = report["concurrency"]["prompts"][0]
    assert first["minorities"][0]["levels"] == [6] and first["minorities"][0]["first_divergence"] == 3
    assert first["minorities"][0]["classification"] == "decisive_flip"
    assert [c["question"] for c in report["comparisons"]] == ["repeat", "concurrency", "concurrency"]
    text = (out / "report.txt").read_text()
    assert "concurrency invariant: FAIL" in text and "95% interval" in text
    assert "| in flight | odd one out |" in (out / "report.md").read_text()
    names = sorted(p.name for p in (out / "traces").iterdir())
    assert names == ["c1-run0.jsonl", "c1-run1.jsonl", "c6-run0.jsonl", "c6-run1.jsonl"]
    assert {p.name for p in out.iterdir()} >= {"env.json", "run_config.json", "determinism_applied.json", "report.json",
                                               "report.txt", "report.md", "diffs"}
    # The directory is judged again offline, the same way.
    assert main(["report", str(out), "--json"]) == 1


def test_check_replay_scores_each_divergence_at_both_levels(tmp_path: Path) -> None:
    out = tmp_path / "c"
    with FakeServer(delay=0.25, flip_when_crowded=True) as server:
        assert _check(server.url, out, "--runs", "1", "--concurrency", "1,3", "--replay") == 1
        scored_in_flight = list(server.scored_in_flight)
    report = json.loads((out / "report.json").read_text())
    replay = report["replay"]
    index = json.loads((out / "replays" / "replays.json").read_text())["replays"]
    # Both runs' tokens under both levels: c1's and c3's rows at 1 and at 3 in flight.
    assert sorted((r["source"], r["setup"]) for r in index) == [
        ("c1-run0", "c1-run0"), ("c1-run0", "c3-run0"), ("c3-run0", "c1-run0"), ("c3-run0", "c3-run0")]
    for entry in index:
        assert entry["rows"] == 3 and entry["scheduled"] is None
        with open_trace(out / entry["path"]) as reader:
            rows = list(reader)
            assert reader.header.labels["concurrency"] == entry["setup"][1]
            assert reader.header.backend_settings["concurrency"] == int(entry["setup"][1])
        assert [r.prompt_id for r in rows] == ["p1", "p2", "p3"] and all(r.batch is None for r in rows)
    # Four replays of three rows each: the two at 1 in flight one at a time, the two at 3 together.
    assert len(scored_in_flight) == 12 and scored_in_flight.count(1) >= 6 and max(scored_in_flight) == 3
    divergent = {p["prompt_id"] for p in report["prompts"] if p["divergences"]}
    assert divergent and {m["prompt_id"] for m in replay["margins"]} == divergent and replay["unmeasured"] == []
    for margin in replay["margins"]:
        assert (margin["left_setup"]["setup"], margin["right_setup"]["setup"]) == ("c1-run0", "c3-run0")
        # The fake scores every forced token alike: the margins are nil, the flip an exact tie.
        assert margin["left_setup"]["margin"] == 0 and margin["right_setup"]["margin"] == 0
        assert margin["verdict"] == "near_tie" and "an exact tie, measured" in margin["text"]
    assert "Replay-backed" in (out / "report.txt").read_text()
    # The directory is judged again offline, replays included.
    assert main(["report", str(out), "--json"]) == 1


def test_check_replay_against_a_chat_endpoint_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check("http://127.0.0.1:9", tmp_path / "c", "--chat", "--replay") == 2
    assert _one_line(capsys) == ("detllm: --replay scores forced tokens through /v1/completions, which --chat leaves; "
                                 "drop one of them")
    assert not (tmp_path / "c").exists()


def test_crowded_levels_that_outnumber_the_sequential_one_are_still_the_odd_ones(tmp_path: Path) -> None:
    # Two crowded levels give every prompt's majority completion; the reference is the
    # sequential one all the same, and the counts blame the crowded requests.
    out = tmp_path / "c"
    with FakeServer(delay=0.25, flip_when_crowded=True) as server:
        assert _check(server.url, out, "--runs", "2", "--concurrency", "1,5,6") == 1
    answer = json.loads((out / "report.json").read_text())["concurrency"]
    levels = {r["concurrency"]: r for r in answer["levels"]}
    assert levels[1]["odd"] == 0
    assert levels[5]["odd"] >= 4 and levels[6]["odd"] >= 4
    flipped = [p for p in answer["prompts"] if p["majority_runs"] > p["reference_runs"]]
    assert flipped, answer["prompts"]
    for prompt in flipped:
        assert prompt["reference"] != 0  # the majority is a crowded completion
        majority = next(m for m in prompt["minorities"] if m["variant"] == 0)
        assert majority["compared_with"] == prompt["reference"] and 1 not in majority["levels"]
        assert majority["first_divergence"] == 3 and majority["classification"] == "decisive_flip"
    assert "Against each prompt's completion at 1 in flight" in answer["text"]


def test_check_passes_where_concurrency_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(delay=0.01) as server:
        assert _check(server.url, tmp_path / "c", "--runs", "2", "--concurrency", "1,4", "--tier", "2") == 0
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["verdict"]["concurrency_invariant"] is True
    assert report["verdict"]["concurrency_invariant_logprobs"] is True
    assert "bounds the odd-one-out rate, not rules it out" in report["verdict"]["text"]


def test_prefix_cache_probe_says_whether_the_cache_was_hit(tmp_path: Path) -> None:
    for behaviour, verdict, words in (
        ({}, "invariant", "3 of 3 warm requests hit the cache"),
        ({"never_cache": True}, "not_hit", "the cache was not hit"),
        ({"no_cache_report": True}, "hit_unknown", "reports no usage.prompt_tokens_details.cached_tokens"),
    ):
        out = tmp_path / verdict
        with FakeServer(**behaviour) as server:
            assert _check(server.url, out, "--runs", "2", "--concurrency", "1", "--prefix-cache-probe") == 0
        probe = json.loads((out / "prefix_cache.json").read_text())
        assert probe["verdict"] == verdict
        assert words in probe["text"] and words in (out / "report.txt").read_text().replace("\n", " ")


def test_ids_are_derived_with_a_tokenizer_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer(no_ids=True) as server:
        assert _run(server.url, tmp_path / "r") == 2
        line = _one_line(capsys)
        assert line == (f"detllm: {server.url}/v1/completions: the server returns no token ids (return_token_ids): "
                        "give --tokenizer to derive them from the text")
        assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("*.jsonl"))


def test_the_api_key_is_sent_and_never_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-test-5f1e0c9b7d3a"
    monkeypatch.setenv("DETLLM_TEST_KEY", secret)
    with FakeServer(delay=0.01, flip_when_crowded=True) as server:
        assert _check(server.url, tmp_path / "c", "--runs", "2", "--concurrency", "1,2", "--api-key-env", "DETLLM_TEST_KEY",
                      "--prefix-cache-probe") == 1
        assert set(server.authorizations) == {f"Bearer {secret}"}
        assert main(["pack", str(tmp_path / "c"), "--out", str(tmp_path / "pack")]) == 0
        readme = (tmp_path / "pack" / "README.md").read_text()
        assert "--runs 2 --concurrency 1,2 --tier 1" in readme
        # The pack's command runs again as written.
        rerun = readme.split("```sh\n", 1)[1].split("\n", 1)[0].split()
        assert rerun[:2] == ["detllm", "check"]
        again = [a if a != "prompts.jsonl" else str(tmp_path / "pack" / "prompts.jsonl") for a in rerun[2:]]
        again[again.index("again")] = str(tmp_path / "again")
        assert main(["check", *again, "-q"]) == 1
    with FakeServer(status=401, status_after=0) as server:
        assert _run(server.url, tmp_path / "r", "--api-key-env", "DETLLM_TEST_KEY") == 2
    captured = capsys.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in captured.out + captured.err
    assert "DETLLM_TEST_KEY" in (tmp_path / "c" / "run_config.json").read_text()  # the name, not the value


def test_redact_url_leaves_the_base_url_out(tmp_path: Path) -> None:
    with FakeServer() as server:
        assert _run(server.url, tmp_path / "r", "--redact", "url") == 0
    address = f"127.0.0.1:{server.port}"
    for path in (tmp_path / "r").iterdir():
        assert address not in path.read_text(), path


# -- faults: one line naming the URL, exit 2, the rows received kept ------------------


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert _run(url, tmp_path / "r") == 2
    assert _one_line(capsys) == f"detllm: {url}/v1/models: connection refused (3 retries)"


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ({"status": 500, "status_after": 2}, "/v1/completions: HTTP 500 Internal Server Error: fault 500 on purpose\\x1b[31m"),
        ({"status": 404, "status_after": 2}, "/v1/completions: HTTP 404 Not Found: fault 404 on purpose\\x1b[31m"),
        ({"malformed": True, "status_after": 2}, "/v1/completions: the answer is not valid JSON"),
        ({"truncated": True}, "/v1/completions: the answer was cut short"),
        ({"die_after": 2}, "/v1/completions: "),
        ({"hang": 3.0}, "/v1/completions: no answer within 0.5 s"),
    ],
)
def test_server_faults(tmp_path: Path, capsys: pytest.CaptureFixture[str], behaviour: dict, message: str) -> None:
    out = tmp_path / "c"
    with FakeServer(**behaviour) as server:
        code = _check(server.url, out, "--runs", "2", "--concurrency", "1", "--timeout", "0.5")
        url = server.url
    assert code == 2
    line = _one_line(capsys)
    assert line.startswith(f"detllm: {url}{message}"), line
    assert "Traceback" not in line and "\x1b" not in line
    partial = list((out / "traces").glob("*.partial"))
    assert partial, "the rows received must be kept"
    assert not list((out / "traces").glob("*.jsonl"))
    assert main(["validate", str(partial[0])]) == 1  # never read as complete
    if behaviour.get("status_after") == 2 and "status" in behaviour:
        with open_trace(partial[0], allow_incomplete=True) as trace:
            assert [row.prompt_id for row in trace] == ["p1", "p2"]
            assert not trace.complete


def test_a_busy_server_is_retried_and_the_retry_recorded(tmp_path: Path) -> None:
    with FakeServer(busy_once=True) as server:
        assert _check(server.url, tmp_path / "c", "--runs", "2", "--concurrency", "1") == 0
    text = (tmp_path / "c" / "report.txt").read_text().replace("\n", " ")
    assert "The client retried requests: 1 after http 503" in text


def test_ctrl_c_keeps_the_rows_received(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    calls = {"n": 0}
    original = OpenAIBackend.request

    def interrupted(self, prompt, decoding, top_k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, prompt, decoding, top_k)

    monkeypatch.setattr(OpenAIBackend, "request", interrupted)
    with FakeServer() as server:
        assert _check(server.url, tmp_path / "c", "--runs", "2", "--concurrency", "1") == 2
    line = _one_line(capsys)
    assert line.startswith(f"detllm: {server.url}/v1/completions: interrupted (Ctrl-C) after 2 of 6 requests")
    with open_trace(tmp_path / "c" / "traces" / "c1-run0.jsonl.partial", allow_incomplete=True) as trace:
        assert [row.prompt_id for row in trace] == ["p1", "p2"]


# -- replay ---------------------------------------------------------------------------


def test_score_returns_each_forced_token_s_logprob_and_rank() -> None:
    with FakeServer() as server:
        backend = OpenAIBackend(BackendConfig(model=MODEL, options={"base_url": server.url}))
        steps = backend.score([ForcedSequence(prompt_id="p1", input_ids=(104, 105), forced_ids=(65, 66, 67))], top_k=3)
        backend.close()
    assert [s.rank for s in steps[0]] == [1, 1, 1]
    assert steps[0][0].top_ids == (65, 66, 67) and steps[0][0].logprob == -0.25


def test_score_refuses_where_the_server_cannot_replay() -> None:
    from detllm.errors import CaptureError

    with FakeServer(refuse_prompt_logprobs=True) as server:
        backend = OpenAIBackend(BackendConfig(model=MODEL, options={"base_url": server.url}))
        with pytest.raises(CaptureError, match=r"/v1/completions: the server refused prompt_logprobs, so it cannot replay"):
            backend.score([ForcedSequence(prompt_id="p1", input_ids=(104,), forced_ids=(65,))], top_k=2)
        backend.close()


def test_options_for_another_backend_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-llama", "--base-url", "http://127.0.0.1:1", "--out", "/nonexistent/x"]) == 2
    assert _one_line(capsys) == "detllm: --base-url applies to --backend openai only"
    assert main(["run", "--model", MODEL, "--backend", "openai"]) == 2
    assert _one_line(capsys) == "detllm: --backend openai needs --base-url (for example http://127.0.0.1:8000)"


def test_detllm_replay_through_a_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer() as server:
        assert _run(server.url, tmp_path / "r") == 0
        out = tmp_path / "replay"
        assert main(["replay", str(tmp_path / "r"), "--backend", "openai", "--base-url", server.url, "--model", MODEL,
                     "--concurrency", "2", "--redact", "url", "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    with open_trace(tmp_path / "r" / "trace.jsonl") as trace:
        rows, footer = list(trace), trace.footer
    with open_trace(out / "trace.jsonl") as trace:
        header, replayed = trace.header, list(trace)
    assert header.replay is not None and footer is not None and header.replay.source_digest == footer.digest
    assert header.backend_settings["replay"]["method"].startswith("POST /v1/completions")
    assert server.url not in (out / "trace.jsonl").read_text() + (out / "run_config.json").read_text()
    assert [r.token_ids for r in replayed] == [r.token_ids for r in rows]
    assert all(r.ranks == [1] * len(r.token_ids) and r.logprobs == [-0.25] * len(r.token_ids) for r in replayed)
    assert main(["diff", str(tmp_path / "r"), str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "replay"


def test_detllm_replay_refuses_a_server_without_prompt_logprobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer() as server:
        assert _run(server.url, tmp_path / "r") == 0
    capsys.readouterr()
    with FakeServer(refuse_prompt_logprobs=True) as server:
        code = main(["replay", str(tmp_path / "r"), "--backend", "openai", "--base-url", server.url, "--model", MODEL,
                     "--out", str(tmp_path / "replay.jsonl")])  # fmt: skip
    line = _one_line(capsys)
    assert code == 2
    assert line.startswith(f"detllm: {server.url}/v1/completions: the server refused prompt_logprobs, so it cannot replay (")
    assert not (tmp_path / "replay.jsonl").exists()


def test_a_sweep_against_a_server_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--model", "m",
                 "--sweep", "dtype=float32,bfloat16", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--sweep needs an in-process backend (hf or vllm)" in err
    assert not (tmp_path / "c").exists()


def test_the_python_check_against_a_server_is_the_concurrency_check(tmp_path: Path) -> None:
    import detllm

    with FakeServer(delay=0.25, flip_when_crowded=True) as server:
        result = detllm.check(MODEL, ["hello", "world", "again"], backend="openai", options={"base_url": server.url},
                              runs=2, concurrency=[1, 3], max_new_tokens=6, out=tmp_path / "c")
    verdict = result.report.verdict
    assert verdict.tier1 is True and verdict.concurrency_invariant is False and result.exit_code == 1
    assert sorted(result.trace_paths) == ["c1-run0", "c1-run1", "c3-run0", "c3-run1"]
    assert json.loads((tmp_path / "c" / "report.json").read_text())["concurrency"]["levels"][0]["odd"] == 0


def test_the_python_check_refuses_what_a_server_check_cannot_do() -> None:
    import detllm
    from detllm.errors import UsageError

    for asked, name in (({"sweep": ["dtype=bfloat16"]}, "sweep"),
                        ({"batch_sizes": [1, 4]}, "batch_sizes"), ({"isolate": True}, "isolate")):
        with pytest.raises(UsageError, match=f"^detllm.check: {name} needs an in-process backend"):
            detllm.check(MODEL, ["hello"], backend="openai", options={"base_url": "http://127.0.0.1:9"}, **asked)
    with pytest.raises(UsageError, match="concurrency applies to backend='openai' only"):
        detllm.check("tiny-llama", ["hello"], concurrency=[1, 4])
    with pytest.raises(UsageError, match="prefix_cache_probe applies to backend='openai' only"):
        detllm.check("tiny-llama", ["hello"], prefix_cache_probe=True)


def test_a_server_trace_never_claims_a_dtype_it_was_not_given(tmp_path: Path) -> None:
    import detllm

    with FakeServer() as server:
        assert _run(server.url, tmp_path / "unknown") == 0
        assert _run(server.url, tmp_path / "given", "--dtype", "bfloat16") == 0
        python = detllm.run(MODEL, ["hello"], backend="openai", options={"base_url": server.url}, max_new_tokens=2)
    with open_trace(tmp_path / "unknown" / "trace.jsonl") as reader:
        assert reader.header.dtype == "unknown"
    with open_trace(tmp_path / "given" / "trace.jsonl") as reader:
        assert reader.header.dtype == "bfloat16"
    assert python.header.dtype == "unknown"
    # The reproduce command of the directory gives the same setup back.
    config = json.loads((tmp_path / "unknown" / "run_config.json").read_text())["config"]
    assert config["dtype"] == "unknown"

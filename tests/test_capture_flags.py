"""Capture settings and command-line flags map both ways without loss.

``RUN_FLAGS`` (detllm/rundir.py) is the one table: the command line adds its flags from it,
``RunSettings.arguments()`` maps settings back to flags (used by ``--isolate``, ``pack`` and
every "how to reproduce" line), and ``config_from`` (with the server options) maps flags to
settings. Neither loads a model.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from detllm.capture.runner import RunConfig
from detllm.cli import build_parser
from detllm.cli._capture_options import config_from
from detllm.cli._server_options import with_server_options
from detllm.diff import DiffOptions
from detllm.rundir import RUN_FLAGS, CheckPlan, RunSettings

PARSER = build_parser()

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=12)
option_values = st.one_of(st.booleans(), st.integers(-5, 500), st.text(max_size=8), st.lists(st.integers(0, 9), max_size=3))
option_keys = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)


@st.composite
def run_configs(draw: st.DrawFn) -> RunConfig:
    backend = draw(st.sampled_from(["hf", "vllm", "openai"]))
    options = draw(st.dictionaries(option_keys, option_values, max_size=3))
    if backend == "openai":
        options["base_url"] = "http://127.0.0.1:8000"
    return RunConfig(
        model=draw(names.filter(lambda n: not n.startswith("-"))),
        backend=backend,
        tokenizer=draw(st.none() | names.filter(lambda n: not n.startswith("-"))),
        revision=draw(st.none() | st.from_regex(r"[0-9a-f]{7}", fullmatch=True)),
        dtype=draw(st.sampled_from(["float32", "bfloat16", "float16"])),
        device=draw(st.sampled_from(["auto", "cpu", "cuda:1"])),
        mode=draw(st.sampled_from(["strict", "best-effort", "off"])),
        seed=draw(st.integers(0, 2**31)),
        threads=draw(st.none() | st.integers(1, 64)),
        max_new_tokens=draw(st.integers(1, 4096)),
        do_sample=draw(st.booleans()),
        temperature=draw(st.floats(0.05, 4.0)),
        top_p=draw(st.floats(0.05, 1.0)),
        top_k=draw(st.integers(0, 100)),
        batch_size=draw(st.integers(1, 64)),
        composition=draw(st.sampled_from(["in-order", "reversed", "shuffled:3"])),
        top_logprobs=draw(st.integers(0, 20)),
        logprobs=draw(st.sampled_from(["raw", "processed"])),
        options=options,
        redact=draw(st.sampled_from([[], ["paths"], ["hostname", "variables"]])),
    )


def settings_of(argv: list[str]) -> RunConfig:
    args = PARSER.parse_args(argv)
    return with_server_options(config_from(args, batch_size=args.batch_size, composition=args.composition), args)


def flags_of(config: RunConfig) -> list[str]:
    """The run command's flags, as ``pack`` writes them for a run directory."""
    return ["run", *config.arguments(), "--batch-size", str(config.batch_size), "--composition", config.composition]


@settings(max_examples=300, deadline=None)
@given(run_configs())
def test_settings_to_flags_to_settings(config: RunConfig) -> None:
    assert settings_of(flags_of(config)) == config


@settings(max_examples=100, deadline=None)
@given(run_configs())
def test_flags_to_settings_to_flags(config: RunConfig) -> None:
    argv = flags_of(config)
    again = flags_of(settings_of(argv))
    assert again == argv


def test_the_server_flags_become_backend_options_that_map_back() -> None:
    argv = ["run", "--model", "m", "--backend", "openai", "--base-url", "http://h:1", "--chat", "--api-key-env", "KEY",
            "--timeout", "5"]  # fmt: skip
    config = settings_of(argv)
    assert config.options == {"base_url": "http://h:1", "chat": True, "api_key_env": "KEY", "timeout": 5.0}
    assert settings_of(flags_of(config)) == config


def test_a_checks_default_comparison_is_the_diffs() -> None:
    plan = CheckPlan(runs=2, batch_sizes=[1], compositions=[], traces=[])
    assert (plan.tier, plan.atol) == (DiffOptions.tier, DiffOptions.atol)
    assert msgspec.convert({"runs": 2, "batch_sizes": [1], "compositions": [], "traces": []}, CheckPlan) == plan
    for argv in (["check", "--model", "m"], ["diff", "a", "b"], ["bisect", "a", "b"]):
        args = PARSER.parse_args(argv)
        assert (args.tier, args.atol) == (DiffOptions.tier, DiffOptions.atol), argv
    # report's --tier defaults to the tier a check directory was judged at.
    assert PARSER.parse_args(["report", "a", "b", "c"]).tier is None


def test_the_table_has_one_flag_for_each_setting_and_the_round_trip_sees_them_all() -> None:
    fields = [f.field for f in RUN_FLAGS]
    assert len(set(fields)) == len(fields)
    # batch_size and composition are each command's own (check takes lists of them).
    assert set(fields) == set(RunSettings.__struct_fields__) - {"batch_size", "composition"}
    for command in (["run", "--model", "m"], ["check", "--model", "m"]):
        assert set(fields) <= set(vars(PARSER.parse_args(command))), command


def test_every_flag_at_another_value_comes_back_in_table_order() -> None:
    config = RunConfig(model="m", tokenizer="t", revision="abc1234", backend="vllm", dtype="bfloat16", device="cpu",
                       options={"k": "v", "n": 2}, max_new_tokens=3, do_sample=True, temperature=0.5, top_p=0.9,
                       top_k=4, seed=7, top_logprobs=2, logprobs="processed", mode="strict", threads=2,
                       redact=["hostname", "paths"])  # fmt: skip
    assert config.arguments() == [
        "--model", "m", "--tokenizer", "t", "--revision", "abc1234", "--backend", "vllm", "--dtype", "bfloat16",
        "--device", "cpu", "--backend-option", "k=v", "--backend-option", "n=2", "--max-new-tokens", "3",
        "--do-sample", "--temperature", "0.5", "--top-p", "0.9", "--top-k", "4", "--seed", "7",
        "--top-logprobs", "2", "--logprobs", "processed", "--mode", "strict", "--threads", "2",
        "--redact", "hostname,paths",
    ]  # fmt: skip
    assert settings_of(flags_of(config)) == config
    assert RunConfig(model="m").arguments() == [
        "--model", "m", "--backend", "hf", "--dtype", "float32", "--device", "auto", "--max-new-tokens", "32",
        "--mode", "best-effort",
    ]  # fmt: skip

"""``detllm pack``: cut a check directory down to the prompts that diverge.

The pack is itself a check directory: every trace keeps only the chosen prompts'
rows (re-written, so each footer counts and digests what is left), the report is
computed again on those traces, and a README says how to run the check again on
the same prompts and how to compare. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .._canonical import CHUNK_BYTES as LARGE_LINE
from .._escape import code, code_block, markdown
from .._claim import DirectoryClaim
from ..diff import DiffOptions, diff_traces, rebuild_check_report
from ..diff.inputs import (
    SWEEP_FILE,
    build_sweep_report,
    read_sweep,
    REPLAYS_DIR,
    REPLAY_INDEX,
    OneSideIds,
    prompt_id_of,
    read_determinism,
    read_index,
    recorded_runs,
    write_index,
)
from ..diff.model import TIER1_FAILURES, CheckReport
from ..diff.options import CHECK_FIELDS, comparison_arguments
from ..errors import InputError, RunDirectoryError, TraceFormatError, UsageError
from ..reader import open_trace
from ..trace import Footer, Header
from ..rundir import (
    CheckPlan,
    DETERMINISM_FILE,
    ENV_FILE,
    ISOLATED_DIR,
    PROMPT_FILE,
    RUN_CONFIG_FILE,
    TRACE_FILE,
    TRACES_DIR,
    RunConfigFile,
    prompt_lines,
    prompt_record,
    read_run_config,
    write_document,
    write_file,
)
from ..writer import PARTIAL_SUFFIX, TraceWriter
from ._load import load_check_statuses
from ._render import write_report_dir

README = "README.md"


class NothingToPack(UsageError):
    """Every run agrees: there is no diverging prompt to pack."""


@dataclass(frozen=True)
class PackResult:
    directory: Path
    prompts: list[str]
    """The ids of the prompts kept, in run order."""
    total: int
    """Prompts in the source."""
    report: CheckReport | None
    """The report on the packed traces (None for a run directory, which has one trace)."""
    command: list[str]
    """The command that records the same kind of evidence again, on the packed prompts."""
    incomplete: str | None = None
    """What a check that did not finish lacked (``allow_incomplete``); None when whole."""


def diverging_prompts(report: CheckReport, tier: int) -> list[str]:
    """Prompts that differ from run 0 in some run, at ``tier``."""
    return [p.prompt_id for p in report.prompts if _diverges({d.result.status for d in p.divergences}, tier)]


def _diverges(statuses: set[str] | frozenset[str], tier: int) -> bool:
    return bool(statuses & TIER1_FAILURES) if tier == 1 else bool(statuses - {"identical"})


def make_pack(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    all_prompts: bool = False,
    tier: int | None = None,
    allow_incomplete: bool = False,
) -> PackResult:
    """Write the minimal repro pack of a check directory (or of a run directory, with
    ``all_prompts``) to ``out``, which must not exist or be empty; ``out`` is claimed
    first, so two packs never write into one directory. ``allow_incomplete``: pack a
    check that did not finish, from the complete rows of the traces it wrote."""
    with DirectoryClaim(out) as claim, _removed_on_failure(claim.directory, created=claim.created):
        return _make_pack(Path(source), claim.directory, all_prompts, tier, allow_incomplete)


def _make_pack(base: Path, out: Path, all_prompts: bool, tier: int | None, allow_incomplete: bool) -> PackResult:
    if not base.is_dir():
        raise InputError(f"{base}: not a directory (give a check or run directory)")
    config_path = base / RUN_CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{base}: no {RUN_CONFIG_FILE}: not a detLLM check or run directory")
    config = read_run_config(base, stream_prompts=True)  # a million prompts are read again, not kept
    document = config.document
    if config.check is None:
        return _pack_run(base, Path(out), config, all_prompts)
    plan = config.check
    saved = base / "report.json"
    # Only what the pack uses: the options, and the statuses of the prompts that diverge.
    report, statuses = load_check_statuses(saved) if saved.is_file() else (None, [])
    if report is None:
        read_determinism(base)  # a check directory that cannot be judged is refused as before
    runs, incomplete = recorded_runs(base, plan.traces, allow_incomplete)
    if report is not None and report.kind != "check":
        raise InputError(f"{saved}: not a check report (kind {report.kind!r})")
    source_options = (
        report.options.to_options() if report is not None else DiffOptions(tier=plan.tier, atol=plan.atol, allow_incomplete=allow_incomplete)
    )
    tier = source_options.tier if tier is None else tier
    if tier not in (1, 2):
        raise UsageError(f"tier must be 1 or 2, got {tier!r}")
    total = len(config.prompts)
    if all_prompts:
        keep = [p.id for p in config.prompts]
    elif report is not None:
        keep = [pid for pid, found in statuses if _diverges(found, tier)]
    else:
        keep = _diverging_in_traces(base, plan, source_options, tier)
    sweep = None if all_prompts else build_sweep_report(base, source_options.replace(tier=1))
    if sweep is not None:  # a prompt whose tokens only a swept setting changes is a finding too
        listed_keep = set(keep)
        for variant in sweep.variants:
            for comparison in variant.comparisons:
                for pid in comparison.divergent:
                    if pid not in listed_keep:
                        keep.append(pid)
                        listed_keep.add(pid)
    if not keep:
        what = "tokens" if tier == 1 else "tokens or logprobs"
        raise NothingToPack(
            f"{base}: no prompt diverges from run 0 in its {what} (Tier {tier}); nothing to pack "
            "(--all packs every prompt)"
        )
    wanted = set(keep)
    kept_prompts = [p for p in config.prompts if p.id in wanted]  # only these are held
    listed = {p.id for p in kept_prompts}
    unlisted = [k for k in keep if k not in listed]
    if unlisted:
        raise InputError(f"{config_path}: prompt {unlisted[0]!r} of the check's traces is not in its prompts")
    directory = out  # claimed by make_pack
    (directory / TRACES_DIR).mkdir()
    footers: dict[str, tuple[Footer | None, Footer]] = {}
    for run in runs:
        # A trace that did not finish is packed whole: its complete rows, with a footer.
        footers[run.name] = _filter_trace(base / run.path, directory / run.path.removesuffix(PARTIAL_SUFFIX), wanted)
    replayed = _pack_replays(base, directory, wanted, footers)
    swept = _pack_sweep(base, directory, wanted)
    for name in (ENV_FILE, DETERMINISM_FILE):
        shutil.copyfile(base / name, directory / name)
    for isolated in sorted((base / ISOLATED_DIR).glob(f"*/{DETERMINISM_FILE}")):
        target = directory / ISOLATED_DIR / isolated.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for name in (DETERMINISM_FILE, ENV_FILE):
            if (isolated.parent / name).is_file():
                shutil.copyfile(isolated.parent / name, target / name)
    packed = dict(document)
    packed["prompts"] = [prompt_record(p) for p in kept_prompts]
    packed["pack"] = {"source": str(base), "prompts": total, "kept": keep, "tier": tier}
    if incomplete:
        packed["check"] = dict(packed["check"], traces=[
            msgspec.to_builtins(msgspec.structs.replace(r, path=r.path.removesuffix(PARTIAL_SUFFIX))) for r in runs
        ])
        packed["pack"]["incomplete"] = incomplete[0]
    write_document(directory / RUN_CONFIG_FILE, packed)
    write_file(directory / PROMPT_FILE, prompt_lines(kept_prompts))
    options = source_options.replace(tier=tier)
    packed_report = rebuild_check_report(directory, options)
    command = [
        "detllm", "check", *config.settings.arguments(),
        "--runs", str(plan.runs), "--batch-size", ",".join(map(str, plan.batch_sizes)),
        "--compositions", ",".join(plan.compositions) if plan.compositions else "",
        *(["--isolate"] if plan.isolate else []), *(["--replay"] if replayed else []), *swept,
        *comparison_arguments(options, CHECK_FIELDS, keep=("tier",)),
        "--prompt-file", PROMPT_FILE, "--out", "again",
    ]  # fmt: skip
    if not plan.compositions:
        at = command.index("--compositions")
        del command[at : at + 2]
    if plan.concurrency is not None:  # a server check: requests in flight, not batch sizes
        at = command.index("--batch-size")
        command[at : at + 2] = ["--concurrency", ",".join(map(str, plan.concurrency))]
    write_report_dir(packed_report, directory, command=command)
    readme = _check_readme(base, packed_report, plan, keep, total, tier, command, config.command, replayed, bool(swept))
    if incomplete:
        readme = readme.replace("\n## What was found\n", f"\n{incomplete[0]}\n\n## What was found\n", 1)
    write_file(directory / README, readme.encode())
    return PackResult(directory=directory, prompts=keep, total=total, report=packed_report, command=command,
                      incomplete=incomplete[0] if incomplete else None)


def _diverging_in_traces(base: Path, plan: CheckPlan, options: DiffOptions, tier: int) -> list[str]:
    """The prompts that differ from run 0 in some run at ``tier``, in the check report's order,
    read off one comparison at a time: only the diverging prompts are held."""
    planned, _ = recorded_runs(base, plan.traces, options.allow_incomplete)
    if len(planned) < 2:
        raise UsageError("a check needs at least two traces to compare")
    paths = [base / run.path for run in planned]
    engine_options = options.replace(tier=1)  # as the check report compares
    # Each kept prompt's place: run 0's order, then the prompts run 0 lacks as later runs list them.
    first: dict[str, tuple[int, int]] = {}
    for number, path in enumerate(paths[1:], start=1):
        report = diff_traces(paths[0], path, engine_options)
        for result in report.diverging():
            if tier == 1 and result.status not in TIER1_FAILURES:
                continue
            if result.left_index is not None:
                place = (0, result.left_index)
            else:
                assert result.right_index is not None
                place = (number, result.right_index)
            if place < first.get(result.prompt_id, place):
                first[result.prompt_id] = place
            else:
                first.setdefault(result.prompt_id, place)
    return sorted(first, key=first.__getitem__)


def _pack_run(base: Path, out: Path, config: RunConfigFile, all_prompts: bool) -> PackResult:
    if not all_prompts:
        raise NothingToPack(
            f"{base}: a run directory holds one trace, so nothing in it can diverge; pack a check "
            "directory (detllm check), or pass --all to pack every prompt of this run"
        )
    trace = base / TRACE_FILE
    if not trace.is_file():
        raise InputError(f"{base}: no {TRACE_FILE}")
    directory = Path(out)  # claimed by make_pack
    ids = [p.id for p in config.prompts]
    _filter_trace(trace, directory / TRACE_FILE, set(ids))
    for name in (ENV_FILE, DETERMINISM_FILE, RUN_CONFIG_FILE):
        shutil.copyfile(base / name, directory / name)
    write_file(directory / PROMPT_FILE, prompt_lines(config.prompts))
    settings = config.settings
    command = [
        "detllm", "run", *settings.arguments(), "--batch-size", str(settings.batch_size),
        *(["--composition", settings.composition] if settings.composition != "in-order" else []),
        "--prompt-file", PROMPT_FILE, "--out", "again",
    ]  # fmt: skip
    text = (
        f"# detLLM repro pack\n\n"
        f"The run in {code(str(base))}: {len(ids)} prompts (`{PROMPT_FILE}`), its settings (`{RUN_CONFIG_FILE}`), "
        f"environment (`{ENV_FILE}`), determinism controls (`{DETERMINISM_FILE}`) and trace (`{TRACE_FILE}`).\n\n"
        "## Run it again\n\n"
        + code_block([shlex.join(command), f"detllm diff {TRACE_FILE} again/{TRACE_FILE}"], "sh")
        + "\n\n"
        "`detllm diff` exits 0 when the two traces agree, 1 when they do not; its report shows the first "
        "divergent token of each prompt and what it is consistent with.\n"
    )
    write_file(directory / README, text.encode())
    return PackResult(directory=directory, prompts=ids, total=len(ids), report=None, command=command)


@contextmanager
def _removed_on_failure(directory: Path, *, created: bool) -> Iterator[None]:
    """Remove what was written in ``directory`` (``created`` for this pack, or empty before)
    when the block fails."""
    existed = not created
    try:
        yield
    except BaseException:
        if existed:
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        raise


_ID_MEMBER = b'"prompt_id"'


def _pack_replays(base: Path, directory: Path, wanted: set[str], footers: dict[str, tuple[Footer | None, Footer]]) -> bool:
    """Copy the check's replays (``detllm check --replay``), cut to the ``wanted`` prompts;
    False when the check was not replayed.

    A replay names its source by the footer digest (P6), and the pack re-writes the
    sources: each packed replay's ``Header.replay`` names its packed source (digest and
    rows), after the original replay was checked against the original source. A replay
    left with no prompt is dropped from the index."""
    replays = read_index(base)
    if replays is None:
        return False
    (directory / REPLAYS_DIR).mkdir()
    index_path = base / REPLAY_INDEX
    kept = []
    for spec in replays:
        if spec.source not in footers:
            raise InputError(f"{index_path}: replay {spec.name!r} replays run {spec.source!r}, which the check does not hold")
        prompts = [p for p in spec.prompts if p in wanted]
        if not prompts:
            continue
        original, packed = footers[spec.source]
        where = Path(spec.path)
        if where.parent != Path(REPLAYS_DIR) or where.name.startswith(".") or where.is_absolute():
            raise TraceFormatError(str(index_path), 1, "replays.path", f"{spec.path!r} is not a file in {REPLAYS_DIR}/")
        source = base / spec.path
        if not source.is_file():
            raise InputError(f"{source}: no such file (listed in {REPLAY_INDEX})")

        def renamed(header: Header, path: Path = source, original: Footer | None = original, packed: Footer = packed) -> Header:
            named = header.replay
            if named is None:
                raise TraceFormatError(str(path), 1, "replay", "a replay trace listed in replays.json has no replay member")
            if original is None or named.source_digest != original.digest:
                raise TraceFormatError(str(path), 1, "replay.source_digest",
                                       f"{named.source_digest} is not the digest of the run it replays ({spec.source})")
            return msgspec.structs.replace(header, replay=msgspec.structs.replace(
                named, source_digest=packed.digest, source_rows=packed.rows))

        _, footer = _filter_trace(source, directory / spec.path, wanted, every=False, header=renamed)
        kept.append(msgspec.structs.replace(spec, prompts=prompts, rows=footer.rows))
    write_index(directory, kept)
    return True


def _pack_sweep(base: Path, directory: Path, wanted: set[str]) -> list[str]:
    """Copy the check's engine-setting sweep (``detllm check --sweep``): ``sweep.json``, and
    each variant's traces cut to the ``wanted`` prompts (a trace that is a run of the check
    is packed already). Returns the ``--sweep`` arguments that run the sweep again; none when
    the check swept nothing."""
    record = read_sweep(base)
    if record is None:
        return []
    where = base / SWEEP_FILE
    for variant in record.variants:
        for trace in variant.traces:
            path = Path(trace.path)
            if path.is_absolute() or path.parent != Path(TRACES_DIR) or path.name.startswith("."):
                raise RunDirectoryError(str(where), 1, "variants.traces.path", f"{trace.path!r} is not a file in {TRACES_DIR}/")
            if not (directory / path).exists():
                _filter_trace(base / path, directory / path, wanted)
    variants = []
    for variant in record.variants:
        probe = variant.prefix_cache
        if probe is not None:
            probe = msgspec.structs.replace(probe, cold={k: v for k, v in probe.cold.items() if k in wanted},
                                            warm={k: v for k, v in probe.warm.items() if k in wanted})
        variants.append(msgspec.structs.replace(variant, prefix_cache=probe))
    write_document(directory / SWEEP_FILE, msgspec.structs.replace(record, variants=variants))
    values: dict[str, list[str]] = {}
    for variant in record.variants:
        for key, value in variant.settings.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if text not in values.setdefault(key, []):
                values[key].append(text)
    arguments = [word for key, listed in values.items() for word in ("--sweep", f"{key}={','.join(listed)}")]
    return [*arguments, *(["--sweep-mode", record.mode] if record.mode != "one-at-a-time" else [])]


def _filter_trace(
    source: Path, target: Path, wanted: set[str], *, every: bool = True, header: Callable[[Header], Header] | None = None
) -> tuple[Footer | None, Footer]:
    """Copy ``source`` to ``target`` with only the rows of ``wanted`` prompts: every one of
    them (``every``), unless ``source`` is a trace that did not finish (then its complete
    rows). ``header`` makes the target's header from the source's. Returns the source's
    footer (None for a trace that did not finish) and the target's.

    Rows are read as raw lines and one at a time. A kept row is decoded, checked as the
    reader checks it, and written (a line of a megabyte or more is proved so a part at a
    time and copied, when it can be); of the others only the prompt id is read (as ``diff``
    reads rows it finds byte-identical), for the duplicate check, which keeps fingerprints.
    The footer's digest is checked as the lines pass.
    """
    written: set[str] = set()
    partial = source.name.endswith(PARTIAL_SUFFIX)
    with open_trace(source, allow_incomplete=partial) as reader:
        seen = OneSideIds(reader.path)
        with TraceWriter(target, reader.header if header is None else header(reader.header)) as writer:
            try:
                for index, (line, raw) in enumerate(reader.raw_rows()):
                    pid = prompt_id_of(raw)
                    row = None
                    if pid is None or raw.count(_ID_MEMBER) > 1:  # not the canonical layout: read it all
                        row = reader.decode_row(line, raw)
                        pid = row.prompt_id
                    seen.add(pid, index, line)
                    if pid in wanted:
                        if pid in written:  # a repeat the ids on disk hold: the first one is the error
                            seen.check()
                        # Checked as the reader checks it; written as read when already canonical.
                        # A large line is proved so a part at a time, not decoded whole.
                        proved = reader.prove_line(raw) if row is None and len(raw) >= LARGE_LINE else None
                        if proved is None or not writer.write_line(proved):
                            writer.write(row if row is not None else reader.decode_row(line, raw), raw)
                        written.add(pid)
                seen.check()
            except TraceFormatError:
                seen.check()  # a prompt id repeated before the problem comes first
                raise
            finally:
                seen.close()
            missing = sorted(wanted - written) if every else []
            if missing and not partial:
                raise InputError(
                    f"{source}: has no row for prompt {missing[0]!r}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + f", which {RUN_CONFIG_FILE} lists"
                )
        assert writer.footer is not None
        return reader.footer, writer.footer


def _check_readme(
    base: Path, report: CheckReport, plan: Any, keep: list[str], total: int, tier: int, command: list[str],
    original: list[str] | None, replayed: bool = False, swept: bool = False,
) -> str:
    comparisons = []
    for c in report.comparisons:
        failed = not c.tier1 if tier == 1 else c.tier2 is not True
        if failed:
            left, right = report.runs[c.left], report.runs[c.right]
            comparisons.append(f"detllm diff {left.trace.path} {right.trace.path}")
    first = report.runs[0].trace.path
    lines = [
        "# detLLM repro pack",
        "",
        f"Cut from the check in {code(str(base))}: the {len(keep)} of {total} prompts that diverge from run 0 "
        f"at Tier {tier} ({', '.join(code(k) for k in keep[:20])}{' ...' if len(keep) > 20 else ''}).",
        "",
        f"- `{PROMPT_FILE}`: the prompts; `{RUN_CONFIG_FILE}`: the check's settings (its `command` is the "
        "one that made the original check, on every prompt)",
        f"- `{ENV_FILE}`, `{DETERMINISM_FILE}`: the machine and the determinism controls",
        f"- `{TRACES_DIR}/`: each run's trace, with these prompts' rows only",
        *([f"- `{REPLAYS_DIR}/`: the check's replays (`--replay`), with these prompts' rows only; each names "
           "its packed run's trace as its source"] if replayed else []),
        *([f"- `{SWEEP_FILE}`: the check's engine-setting sweep (`--sweep`); each variant's traces are in "
           f"`{TRACES_DIR}/`, with these prompts' rows only"] if swept else []),
        "- `report.txt`, `report.md`, `report.json`, `report.html`, `diffs/first_divergence.json`: the check's "
        "report on them (open `report.html` in a browser)",
        "",
        "## What was found",
        "",
        markdown(report.verdict.text),
        "",
        "## Reproduce",
        "",
        "Run the check again on these prompts with the same settings:",
        "",
        code_block([shlex.join(command)], "sh"),
        "",
        "Then compare the new runs with these (exit status 0: the same; 1: they differ):",
        "",
        code_block([f"detllm diff {first} again/{first}", "detllm report again"], "sh"),
        "",
        "Batches are made of these prompts alone: at a batch size above 1 each prompt has other "
        "batch-mates than in the original check, and a divergence that depends on its neighbours may "
        f"not come back. The original check, on all {total} prompts, ran: "
        f"{code(shlex.join(original or ['(run from Python)']))}.",
        "",
    ]
    if comparisons:
        lines += ["The divergences in this pack:", "", code_block(comparisons, "sh"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"

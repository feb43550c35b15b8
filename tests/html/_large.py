"""A large check report made from the recorded one: its prompts and runs repeated.

Used by the thinning tests and by ``benchmarks/bench_html.py``; the numbers are the
recorded check's, copied, so every part of the page has something to draw.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from detllm.diff.model import CheckReport, PositionCount
from detllm.report import load_report

CHECK = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "check-flip"


def large_check(prompts: int, runs: int) -> CheckReport:
    """``prompts`` prompts x ``runs`` runs (run 0 included), cycling through the recorded ones."""
    base = load_report(CHECK / "report.json")
    assert isinstance(base, CheckReport)
    replace = msgspec.structs.replace
    n_base = len(base.comparisons)
    run_list = [base.runs[0]] + [
        replace(base.runs[1 + (i - 1) % n_base], name=f"{base.runs[1 + (i - 1) % n_base].name}-{i}")
        for i in range(1, runs)
    ]
    comparisons = [replace(base.comparisons[(i - 1) % n_base], left=0, right=i) for i in range(1, runs)]
    prompt_list = []
    for j in range(prompts):
        template = base.prompts[j % len(base.prompts)]
        divergences = [
            replace(d, comparison=k)
            for d in template.divergences
            for k in range(d.comparison, len(comparisons), n_base)
        ]
        prompt_list.append(replace(template, prompt_id=f"{template.prompt_id}-{j}", divergences=divergences))
    scale = prompts * len(comparisons) / (len(base.prompts) * n_base)
    summary = replace(
        base.summary,
        runs=runs,
        prompts=prompts,
        divergence_positions=[PositionCount(index=p.index, count=round(p.count * scale))
                              for p in base.summary.divergence_positions],
    )
    return msgspec.structs.replace(base, runs=run_list, comparisons=comparisons, prompts=prompt_list, summary=summary)

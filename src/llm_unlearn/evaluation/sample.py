"""The ``sample`` subcommand's work: a qualitative look at a few items, the unlearned model beside the base model.

For every split (forget, retain) and task, ``n`` items are drawn with a seeded RNG; both models continue
each input greedily (the same generation code as the evaluation). Output: a Markdown file, a JSONL file
beside it, and a plain-text table for the terminal.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_unlearn.data.records import record_kind
from llm_unlearn.evaluation.metrics.semeval import score_row
from llm_unlearn.evaluation.passes.inference import greedy_generate
from llm_unlearn.evaluation.report import md_cell
from llm_unlearn.io_utils import atomic_write_jsonl, atomic_write_text

__all__ = [
    "MARKDOWN_HEADER",
    "sample_records",
    "run_sample",
    "render_markdown",
    "render_text_table",
    "jsonl_path_for",
]


#: The first characters of every ``OUT.md`` (the ``sample`` command recognises its own file by them).
MARKDOWN_HEADER = "# Sample generations\n\nGreedy generations for randomly drawn items"


def sample_records(bundle, n: int = 1, seed: int = 0) -> list:
    """``n`` records per (split, task), drawn with ``random.Random(seed)``; splits in the order forget,
    retain, tasks sorted (records without a task last), items in file order within a group."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    chosen = []
    for split in ("forget", "retain"):
        records = list(getattr(bundle, split))
        tasks = sorted({r.task for r in records}, key=lambda t: (t is None, t or ""))
        for task in tasks:
            group = [r for r in records if r.task == task]
            picks = sorted(rng.sample(range(len(group)), min(n, len(group))))
            chosen += [group[i] for i in picks]
    return chosen


def _score(row: Mapping[str, Any], output: str) -> float | int | None:
    scored = score_row({"id": row["id"], "expected_output": row["expected_output"], "model_output": output})
    if scored["kind"] == "sc":
        return scored["regurgitation_score"]
    if scored["kind"] == "qa":
        return scored["knowledge_score"]
    return None


def run_sample(
    model,
    tokenizer,
    bundle,
    *,
    base_model=None,
    base_tokenizer=None,
    n: int = 1,
    seed: int = 0,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    output: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate for the sampled items; returns one row per item (``id, task, split, kind, input,
    expected_output, unlearned_output, unlearned_score`` and, with a base model, ``base_output,
    base_score``; score = ROUGE-L recall for sc items, exact match for qa items). ``base_model`` may be
    ``model`` itself when it is a PEFT model: the base outputs are then generated with the adapter
    disabled. With ``output`` (``OUT.md``), writes ``OUT.md`` and ``OUT.jsonl``."""
    records = sample_records(bundle, n, seed)
    prompts = [r.input for r in records]
    kwargs = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "progress": progress}
    unlearned = greedy_generate(model, tokenizer, prompts, desc="unlearned model", **kwargs)
    base: list[str] | None = None
    if base_model is not None:
        ctx = contextlib.nullcontext()
        if base_model is model:
            if not hasattr(model, "disable_adapter"):
                raise ValueError("base_model is the model itself, but it has no adapter to disable")
            ctx = model.disable_adapter()
        with ctx:
            base = greedy_generate(
                base_model, base_tokenizer or tokenizer, prompts, desc="base model", **kwargs
            )
    rows = []
    for i, r in enumerate(records):
        row: dict[str, Any] = {
            "id": r.id,
            "task": r.task,
            "split": r.split,
            "kind": record_kind(r.id),
            "input": r.input,
            "expected_output": r.output,
        }
        if base is not None:
            row["base_output"] = base[i]
            row["base_score"] = _score(row, base[i])
        row["unlearned_output"] = unlearned[i]
        row["unlearned_score"] = _score(row, unlearned[i])
        rows.append(row)
    if output is not None:
        out = Path(output)
        atomic_write_text(out, render_markdown(rows, seed=seed))
        atomic_write_jsonl(jsonl_path_for(out), rows)
    return rows


def jsonl_path_for(output: str | Path) -> Path:
    """``OUT.md`` -> ``OUT.jsonl`` (the JSONL written beside the Markdown)."""
    return Path(output).with_suffix(".jsonl")


def _fmt_score(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_markdown(rows: Sequence[Mapping[str, Any]], seed: int | None = None) -> str:
    has_base = any("base_output" in r for r in rows)
    lines = [
        MARKDOWN_HEADER
        + (f" (seed {seed})" if seed is not None else "")
        + ". Score: ROUGE-L recall for sentence completion (sc), exact match for question answering (qa); "
        "forget items should score low after unlearning, retain items high."
    ]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["split"], r.get("task") or "(no task)"), []).append(r)
    for (split, task), group in groups.items():
        lines += ["", f"## {split} / {task}", ""]
        header = ["id", "kind", "input", "expected"]
        if has_base:
            header += ["base output", "base score"]
        header += ["unlearned output", "unlearned score"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| " + " | ".join("---" for _ in header) + " |")
        for r in group:
            cells = [
                md_cell(r["id"], None),
                str(r.get("kind")),
                md_cell(r["input"], None),
                md_cell(r["expected_output"], None),
            ]
            if has_base:
                cells += [md_cell(r.get("base_output", ""), None), _fmt_score(r.get("base_score"))]
            cells += [md_cell(r["unlearned_output"], None), _fmt_score(r.get("unlearned_score"))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    for para in str(text).splitlines() or [""]:
        lines += textwrap.wrap(para, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = (lines[-1][: width - 1] + "…") if len(lines[-1]) >= width else lines[-1] + "…"
    return lines


def render_text_table(rows: Sequence[Mapping[str, Any]], width: int | None = None, max_lines: int = 8) -> str:
    """A plain-text table (input, expected, base output, unlearned output) for the terminal."""
    has_base = any("base_output" in r for r in rows)
    cols = ["input", "expected", *(["base output"] if has_base else []), "unlearned output"]
    total = width or max(100, shutil.get_terminal_size((140, 24)).columns)
    col_w = max(16, (total - 3 * len(cols) - 1) // len(cols))
    sep = "+" + "+".join("-" * (col_w + 2) for _ in cols) + "+"

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(col_w) for c in cells) + " |"

    out = [sep, line(cols), sep.replace("-", "=")]
    for r in rows:
        title = f"{r['split']} / {r.get('task') or '(no task)'} / {r['id']} ({r.get('kind')})"
        out.append("| " + title[: len(sep) - 4].ljust(len(sep) - 4) + " |")
        texts = [r["input"], r["expected_output"]]
        if has_base:
            texts.append(f"{r.get('base_output', '')}  [score {_fmt_score(r.get('base_score'))}]")
        texts.append(f"{r['unlearned_output']}  [score {_fmt_score(r.get('unlearned_score'))}]")
        wrapped = [_wrap(t, col_w, max_lines) for t in texts]
        for i in range(max(len(w) for w in wrapped)):
            out.append(line([w[i] if i < len(w) else "" for w in wrapped]))
        out.append(sep)
    return "\n".join(out)

"""MUSE evaluation (Shi et al. 2024), offline, on MUSE's file layout (:func:`~llm_unlearn.data.benchmarks.load_muse`).

* VerbMem (``forget_verbmem_ROUGE``): the model continues each ``verbmem/forget`` prompt greedily
  (``--max-new-tokens``, MUSE: 128); ROUGE-L F1 of the continuation against ``gt``; mean.
* KnowMem (``forget_knowmem_ROUGE``, ``retain_knowmem_ROUGE``): each question after the split's
  in-context examples (``*_qa_icl``) in the prompt format (``qa``: ``Question: {q}\\nAnswer: {a}``
  blocks separated by a blank line); greedy answer of at most 32 tokens, cut at the first "\\n\\n",
  "\\nQuestion" or "Question:" (the framework's stop words); ROUGE-L F1 against the answer; mean.
* PrivLeak: Min-40% score of every ``privleak/forget`` and ``privleak/holdout`` text (whole text, all
  predicted tokens); MUSE's AUC (0 = forget far likelier than holdout) and
  ``(AUC - AUC_ref) / AUC_ref * 100``. ``AUC_ref`` is the retain model's AUC from its
  ``muse_items.jsonl`` (``--retain-reference``), else ``--reference-auc``, else 0.5 (the framework's
  default; MUSE's own retrained models measured 0.4772 on News and 0.5393 on Books).

MUSE reports the ROUGE numbers x100; here they are in [0, 1] like the framework's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.config.options import opt
from llm_unlearn.data.benchmarks import MuseData, read_objects
from llm_unlearn.errors import DataError, UserError
from llm_unlearn.evaluation.benchmark import register_benchmark
from llm_unlearn.evaluation.benchmarks._shared import (
    PROMPT_FORMAT_HELP,
    PROMPT_FORMATS,
    SYSTEM_PROMPT_HELP,
    check_retain_reference,
    headline_text,
    model_config,
)
from llm_unlearn.evaluation.metrics import tofu_muse as bm
from llm_unlearn.evaluation.report import (
    make_summary,
    plot_headline,
    plot_histograms,
    write_benchmark_report,
    write_summary,
)
from llm_unlearn.io_utils import atomic_write_jsonl

__all__ = [
    "evaluate_muse",
    "muse_metrics",
    "read_muse_reference",
    "KNOWMEM_STOPS",
    "MIN_K_PERCENT",
    "MuseOptions",
    "MuseBenchmark",
]

KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
MIN_K_PERCENT = 40
KNOWMEM_MAX_NEW_TOKENS = 32


def read_muse_reference(path: str | Path) -> float:
    """MUSE's AUC of the retain model from its ``muse_items.jsonl`` (privleak_forget / privleak_holdout rows)."""
    path = Path(path)
    scores: dict[str, list[float]] = {"privleak_forget": [], "privleak_holdout": []}
    for line, row in read_objects(path):
        if not isinstance(row, dict):
            raise DataError(path, "expected a JSON object", line=line)
        s = row.get("set")
        if not isinstance(s, str):
            raise DataError(path, "expected a string", line=line, field="set")
        if s in scores:
            v = row.get("min_k")
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise DataError(path, "expected a number", line=line, field="min_k")
            scores[s].append(float(v))
    if not scores["privleak_forget"] or not scores["privleak_holdout"]:
        raise DataError(path, "needs rows with set privleak_forget and privleak_holdout", field="set")
    return bm.muse_auc(scores["privleak_forget"], scores["privleak_holdout"])


def muse_metrics(rows: Sequence[Mapping[str, Any]], reference_auc: float) -> tuple[dict, dict]:
    """``(metrics, headline)`` from the per-item rows (pure)."""

    def of(s, key):
        return [r[key] for r in rows if r["set"] == s]

    m: dict[str, Any] = {
        "forget_verbmem_ROUGE": bm.mean(of("verbmem", "rouge")),
        "forget_knowmem_ROUGE": bm.mean(of("knowmem_forget", "rouge")),
        "retain_knowmem_ROUGE": bm.mean(of("knowmem_retain", "rouge")),
    }
    m["mia_min_k_auc"] = bm.muse_auc(of("privleak_forget", "min_k"), of("privleak_holdout", "min_k"))
    m["privleak"] = bm.privleak(m["mia_min_k_auc"], reference_auc)
    m["privleak_reference_auc"] = reference_auc
    headline = {
        k: m[k] for k in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak")
    }
    return m, headline


def _reference_auc(retain_reference: str | Path | None, reference_auc: float | None) -> tuple[float, str]:
    """``(privleak's reference AUC, where it comes from)``: the retain model's items, else
    ``--reference-auc``, else 0.5."""
    if retain_reference is not None:
        return read_muse_reference(retain_reference), f"retain model ({retain_reference})"
    if reference_auc is not None:
        if not 0 < reference_auc <= 1:
            raise UserError(f"--reference-auc must be in (0, 1], got {reference_auc}")
        return float(reference_auc), "--reference-auc"
    return 0.5, "default 0.5 (no retain reference)"


def _verbmem_rows(model, tokenizer, data: MuseData, *, max_new_tokens, batch_size, progress) -> list[dict]:
    """VerbMem: the greedy continuation of every prompt and its ROUGE-L F1 against ``gt``."""
    from llm_unlearn.evaluation.passes.inference import greedy_generate

    verb = greedy_generate(
        model,
        tokenizer,
        [p for p, _ in data.verbmem],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc="VerbMem",
    )
    return [
        {
            "set": "verbmem",
            "index": i,
            "prompt": prompt,
            "gt": gt,
            "generation": g,
            "rouge": bm.rouge_l_f1(gt, g),
        }
        for i, ((prompt, gt), g) in enumerate(zip(data.verbmem, verb))
    ]


def _knowmem_rows(model, tokenizer, enc, data: MuseData, *, batch_size, progress) -> list[dict]:
    """KnowMem (forget, then retain): the greedy answer after the in-context examples, cut at the stop
    words, and its ROUGE-L F1 against the answer."""
    from llm_unlearn.evaluation.passes.inference import greedy_generate

    rows = []
    for name, qa, icl in (
        ("knowmem_forget", data.knowmem_forget, data.knowmem_forget_icl),
        ("knowmem_retain", data.knowmem_retain, data.knowmem_retain_icl),
    ):
        gens = greedy_generate(
            model,
            tokenizer,
            [],
            prompt_ids=[enc.prompt(q, icl) for q, _ in qa],
            max_new_tokens=KNOWMEM_MAX_NEW_TOKENS,
            batch_size=batch_size,
            progress=progress,
            desc=name,
        )
        for i, ((q, a), g) in enumerate(zip(qa, gens)):
            g = bm.truncate_at_stop(g, KNOWMEM_STOPS)
            rows.append(
                {
                    "set": name,
                    "index": i,
                    "question": q,
                    "answer": a,
                    "generation": g,
                    "rouge": bm.rouge_l_f1(a, g),
                }
            )
    return rows


def _privleak_rows(model, tokenizer, data: MuseData, *, batch_size, progress) -> list[dict]:
    """PrivLeak: the Min-40% score (and NLL) of every forget, holdout and retain text; a text too short
    to score is an error."""
    from llm_unlearn.evaluation.passes.inference import document_statistics

    rows = []
    for name, texts in (
        ("privleak_forget", data.privleak_forget),
        ("privleak_holdout", data.privleak_holdout),
        ("privleak_retain", data.privleak_retain),
    ):
        if not texts:
            continue
        stats = document_statistics(
            model,
            tokenizer,
            texts,
            batch_size=batch_size,
            k_percent=MIN_K_PERCENT,
            progress=progress,
            desc=name,
        )
        for i, st in enumerate(stats):
            rows.append({"set": name, "index": i, "min_k": st.get("min_k"), "nll": st.get("nll")})
    bad = [r for r in rows if r["min_k"] is None or r["min_k"] != r["min_k"]]
    if bad:
        raise UserError(f"{len(bad)} privleak text(s) are shorter than 2 tokens; they cannot be scored")
    return rows


def _write_muse_outputs(out: Path, summary: dict, rows: Sequence[Mapping[str, Any]]) -> None:
    """``muse_summary.json``, the plots and ``report.md`` (``muse_items.jsonl`` is written before)."""
    write_summary(out, summary)
    plots = [
        str(plot_headline(summary, out / "plots" / "muse_headline.png").relative_to(out)),
        str(
            plot_histograms(
                {
                    "forget": [r["min_k"] for r in rows if r["set"] == "privleak_forget"],
                    "holdout": [r["min_k"] for r in rows if r["set"] == "privleak_holdout"],
                },
                out / "plots" / "muse_privleak_min_k.png",
                "Min-40% log-probability",
                "PrivLeak: forget vs holdout",
            ).relative_to(out)
        ),
    ]
    examples = [
        {
            "set": r["set"],
            "prompt": r.get("prompt") or r.get("question"),
            "expected": r.get("gt") or r.get("answer"),
            "generation": r["generation"],
            "score": r["rouge"],
        }
        for s in ("verbmem", "knowmem_forget", "knowmem_retain")
        for r in [x for x in rows if x["set"] == s][:2]
    ]
    write_benchmark_report(out, summary, examples, plots)


def evaluate_muse(
    model,
    tokenizer,
    data: MuseData,
    *,
    output_dir: str | Path,
    prompt_format: str = "auto",
    system_prompt: str | None = None,
    retain_reference: str | Path | None = None,
    reference_auc: float | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score VerbMem, KnowMem and PrivLeak; write ``muse_items.jsonl``, ``muse_summary.json``,
    ``report.md`` and ``plots/``; return the summary."""
    from llm_unlearn.evaluation.passes.answer_stats import DEFAULT_SYSTEM_PROMPT, QAEncoder

    ref_auc, ref_source = _reference_auc(retain_reference, reference_auc)
    enc = QAEncoder(
        tokenizer, prompt_format, DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    )
    kw = {"batch_size": batch_size, "progress": progress}
    rows = _verbmem_rows(model, tokenizer, data, max_new_tokens=max_new_tokens, **kw)
    rows += _knowmem_rows(model, tokenizer, enc, data, **kw)
    rows += _privleak_rows(model, tokenizer, data, **kw)

    metrics, headline = muse_metrics(rows, ref_auc)
    out = Path(output_dir)
    atomic_write_jsonl(out / "muse_items.jsonl", rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["set"]] = counts.get(r["set"], 0) + 1
    summary = make_summary(
        "muse",
        headline,
        metrics,
        counts,
        reference={"privleak_reference_auc": ref_auc, "privleak_reference": ref_source},
        config={
            **dict(config or {}),
            "prompt_format": enc.format,
            "max_new_tokens": max_new_tokens,
            "knowmem_max_new_tokens": KNOWMEM_MAX_NEW_TOKENS,
            "min_k_percent": MIN_K_PERCENT,
        },
    )
    _write_muse_outputs(out, summary, rows)
    return summary


# ------------------------------------------------------------------------------ the registered benchmark
_MUSE_SETS = (
    "verbmem",
    "knowmem_forget",
    "knowmem_retain",
    "privleak_forget",
    "privleak_holdout",
    "privleak_retain",
)


@dataclass
class MuseOptions:
    data: str | None = opt(
        None, "MUSE's data/<corpus> directory (verbmem/, knowmem/, privleak/)", flag="--data", path=True
    )
    retain_reference: str | None = opt(
        None,
        "the retain model's tofu_items.jsonl / muse_items.jsonl (forget quality; privleak's reference AUC)",
        flag="--retain-reference",
        path=True,
    )
    reference_auc: float | None = opt(
        None,
        "MUSE: privleak's reference AUC without --retain-reference (default 0.5)",
        flag="--reference-auc",
        range=(0, 1, False, False),
    )
    prompt_format: str = opt("auto", PROMPT_FORMAT_HELP, flag="--prompt-format", choices=PROMPT_FORMATS)
    system_prompt: str | None = opt(None, SYSTEM_PROMPT_HELP, flag="--system-prompt")
    limit: int | None = opt(None, "at most N items per set", flag="--limit", range=(1, None, False, False))
    max_new_tokens: int | None = opt(
        None,
        "VerbMem generation length (default 128)",
        flag="--max-new-tokens",
        range=(1, None, False, False),
    )
    batch_size: int = opt(16, "batch size", flag="--batch-size", range=(1, None, False, False))


class MuseBenchmark:
    name = "muse"
    summary = "MUSE (Shi et al. 2024): VerbMem, KnowMem, PrivLeak; --data is MUSE's data/<corpus> directory"
    options = MuseOptions
    required = ("data",)
    exclusive = ()
    outputs = ("muse_items.jsonl", "muse_summary.json", "report.md", "plots")

    def inputs(self, opts: MuseOptions) -> list[str | None]:
        return [opts.data, opts.retain_reference]

    def check(self, opts: MuseOptions) -> MuseData:
        """The MUSE data (--limit items per set) and the retain reference, read before the model."""
        from llm_unlearn.data.benchmarks import load_muse

        check_retain_reference(opts.retain_reference)
        data = load_muse(opts.data)
        if opts.limit:
            for name in _MUSE_SETS:
                setattr(data, name, getattr(data, name)[: opts.limit])
        if opts.retain_reference:
            read_muse_reference(opts.retain_reference)
        return data

    def run(self, model, tokenizer, data: MuseData, opts: MuseOptions, out_dir, progress, *, source=None):
        return evaluate_muse(
            model,
            tokenizer,
            data,
            output_dir=out_dir,
            prompt_format=opts.prompt_format,
            system_prompt=opts.system_prompt,
            retain_reference=opts.retain_reference,
            reference_auc=opts.reference_auc,
            batch_size=opts.batch_size,
            max_new_tokens=opts.max_new_tokens or 128,
            progress=progress,
            config=model_config(source, opts),
        )

    def text(self, summary: dict, out_dir) -> str:
        return f"{headline_text(summary)}\nresults in {out_dir}/ (muse_summary.json, muse_items.jsonl, report.md, plots/)"


register_benchmark(MuseBenchmark())

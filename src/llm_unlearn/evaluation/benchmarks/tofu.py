"""TOFU evaluation (Maini et al. 2024), offline, with the peer framework's metric definitions.

Sets (see :func:`llm_unlearn.data.benchmarks.load_tofu`): ``forget`` (forgetNN_perturbed),
``retain`` (retain_perturbed), ``real_authors``, ``world_facts`` (their ``_perturbed`` files) and
``holdout`` (holdoutNN; only for privleak). Per item and set, ``tofu_items.jsonl`` holds:

* ``prob``: ``exp(-mean NLL)`` of the answer (forget, retain, holdout); for real_authors and
  world_facts the answer's share against the perturbed answers (``probability_with_options``);
* ``rouge``: ROUGE-L recall of the greedy generation against the answer;
* ``truth_ratio``: ``R = geomean p(perturbed) / p(paraphrased answer)`` (forget, retain); for
  real_authors / world_facts ``p(answer)`` takes the paraphrase's place (they have none);
* ``em``, ``es``: exact memorization and extraction strength (forget);
* ``min_k``: Min-40% log-probability of the answer tokens (forget, holdout), for privleak;
* the NLLs the numbers come from, and the generation.

The formulas are in :mod:`llm_unlearn.evaluation.metrics.tofu_muse`; which aggregate is used where:
forget truth ratio ``mean(min(R, 1/R))``, others ``mean(max(0, 1 - R))`` (the framework's
``closer_to_1_better`` / ``true_better``); forget quality = KS p-value of the forget ``R`` of this model
vs the retain model's (from its ``tofu_items.jsonl``, ``--retain-reference``); model utility = harmonic
mean of the 9 retain / real_authors / world_facts numbers; privleak = MUSE's relative AUC difference with
Min-40% on forget vs holdout, against the retain model's AUC (0.5 without one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.config.options import opt
from llm_unlearn.data.benchmarks import TofuData
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.benchmark import register_benchmark
from llm_unlearn.evaluation.benchmarks._shared import (
    PROMPT_FORMAT_HELP,
    PROMPT_FORMATS,
    SYSTEM_PROMPT_HELP,
    check_retain_reference,
    headline_text,
    model_config,
)
from llm_unlearn.evaluation.benchmarks._tofu_reference import SETS, _check_reference, read_retain_reference
from llm_unlearn.evaluation.metrics import tofu_muse as bm
from llm_unlearn.evaluation.report import (
    make_summary,
    plot_headline,
    plot_histograms,
    write_benchmark_report,
    write_summary,
)
from llm_unlearn.io_utils import atomic_write_jsonl

log = logging.getLogger(__name__)

__all__ = [
    "evaluate_tofu",
    "read_retain_reference",
    "tofu_metrics",
    "GENERATION_SETS",
    "MIN_K_PERCENT",
    "TofuOptions",
    "TofuBenchmark",
]

GENERATION_SETS = ("forget", "retain", "real_authors", "world_facts")
MIN_K_PERCENT = 40  # the framework's privleak attack (mia_min_k, k = 0.4)
_PREFIX = {"retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def tofu_metrics(
    rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None
) -> tuple[dict, dict, dict]:
    """``(metrics, headline, reference_info)`` from the per-item rows (pure; tested on hand-made rows)."""
    by_set: dict[str, list[Mapping[str, Any]]] = {s: [r for r in rows if r["set"] == s] for s in SETS}
    m: dict[str, Any] = {}
    forget = by_set["forget"]
    m["forget_Q_A_Prob"] = bm.mean([r["prob"] for r in forget])
    m["forget_Q_A_ROUGE"] = bm.mean([r["rouge"] for r in forget])
    forget_tr = [r["truth_ratio"] for r in forget if r.get("truth_ratio") is not None]
    m["forget_truth_ratio"] = bm.forget_truth_ratio_score(forget_tr)
    m["extraction_strength"] = bm.mean([r.get("es") for r in forget])
    m["exact_memorization"] = bm.mean([r.get("em") for r in forget])
    utility = []
    for s in ("retain", "real_authors", "world_facts"):
        p = _PREFIX[s]
        prob_key = "retain_Q_A_Prob" if s == "retain" else f"{p}_Q_A_Prob_normalised"
        m[prob_key] = bm.mean([r["prob"] for r in by_set[s]])
        m[f"{p}_Q_A_ROUGE"] = bm.mean([r["rouge"] for r in by_set[s]])
        m[f"{p}_Truth_Ratio"] = bm.retain_truth_ratio_score([r["truth_ratio"] for r in by_set[s]])
        utility += [m[prob_key], m[f"{p}_Q_A_ROUGE"], m[f"{p}_Truth_Ratio"]]
    m["model_utility"] = bm.harmonic_mean(utility) if all(v is not None for v in utility) else None
    info: dict[str, Any] = {}
    holdout = by_set["holdout"]
    m["mia_min_k_auc"] = None
    if holdout:
        m["mia_min_k_auc"] = bm.muse_auc([r["min_k"] for r in forget], [r["min_k"] for r in holdout])
    m["forget_quality"] = None
    ref_auc = 0.5
    info["privleak_reference_auc"] = 0.5
    info["privleak_reference"] = "default 0.5 (no retain reference)"
    if reference is not None:
        info["retain_reference"] = reference["path"]
        ref_tr = [reference["forget"][i]["truth_ratio"] for i in sorted(reference["forget"])]
        m["forget_quality"] = bm.forget_quality(forget_tr, ref_tr)
        if reference["holdout"]:
            ref_auc = bm.muse_auc(
                [reference["forget"][i]["min_k"] for i in sorted(reference["forget"])],
                [reference["holdout"][i]["min_k"] for i in sorted(reference["holdout"])],
            )
            info["privleak_reference_auc"] = ref_auc
            info["privleak_reference"] = "retain model (Min-40% AUC, forget vs holdout)"
    m["privleak"] = bm.privleak(m["mia_min_k_auc"], ref_auc) if m["mia_min_k_auc"] is not None else None
    headline_keys = (
        "forget_quality",
        "model_utility",
        "forget_truth_ratio",
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "privleak",
        "extraction_strength",
        "exact_memorization",
    )
    return m, {k: m[k] for k in headline_keys}, info


def _scored_sequences(enc, sets: Mapping[str, Sequence[Any]]) -> tuple[list[tuple[list[int], int]], dict]:
    """Every (question, answer) sequence to score in one batched pass: the answer, the paraphrased
    answer and the perturbed answers (not for holdout) of each item; and ``(set, index, which)`` ->
    position in that list (``which`` = "answer", "para" or "pert<j>")."""
    seqs: list[tuple[list[int], int]] = []
    slots: dict[tuple[str, int, str], int] = {}

    def add(key, question, answer):
        slots[key] = len(seqs)
        seqs.append(enc.pair(question, answer))

    for s, items in sets.items():
        for i, it in enumerate(items):
            add((s, i, "answer"), it.question, it.answer)
            if it.paraphrased_answer is not None:
                add((s, i, "para"), it.question, it.paraphrased_answer)
            for j, w in enumerate(it.perturbed_answers if s != "holdout" else ()):
                add((s, i, f"pert{j}"), it.question, w)
    return seqs, slots


def _item_row(s: str, i: int, it, stats, slots: Mapping, gen: Mapping) -> dict[str, Any]:
    """The ``tofu_items.jsonl`` row of item ``i`` of set ``s`` from its answer statistics and generation."""
    a = stats[slots[(s, i, "answer")]]
    row: dict[str, Any] = {"set": s, "index": i, "question": it.question, "answer": it.answer}
    pert = (
        [stats[slots[(s, i, f"pert{j}")]].nll for j in range(len(it.perturbed_answers))]
        if s != "holdout"
        else []
    )
    row["answer_nll"] = a.nll
    row["prob"] = None if a.nll is None else bm.normalized_probability(a.nll)
    if s in ("real_authors", "world_facts") and a.nll is not None and all(x is not None for x in pert):
        row["prob"] = bm.probability_with_options(a.nll, pert)
    true_nll = stats[slots[(s, i, "para")]].nll if it.paraphrased_answer is not None else a.nll
    if s != "holdout":
        row["paraphrased_nll"] = true_nll if it.paraphrased_answer is not None else None
        row["perturbed_nll"] = pert
        ok = true_nll is not None and pert and all(x is not None for x in pert)
        row["truth_ratio"] = bm.truth_ratio(true_nll, pert) if ok else None
        row["generation"] = gen[(s, i)]
        row["rouge"] = bm.rouge_l_recall(it.answer, gen[(s, i)])
    if s in ("forget", "holdout"):
        body = a.without_eos
        row["min_k"] = bm.min_k_logprob(body.logprobs, MIN_K_PERCENT) if body.logprobs else None
    if s == "forget":
        body = a.without_eos
        row["em"] = bm.exact_memorization(body.correct)
        row["es"] = bm.extraction_strength(body.correct)
    return row


def _write_tofu_outputs(
    out: Path, summary: dict, rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None
) -> None:
    """``tofu_summary.json``, the plots and ``report.md`` (``tofu_items.jsonl`` is written before)."""
    write_summary(out, summary)
    plots = [str(plot_headline(summary, out / "plots" / "tofu_headline.png").relative_to(out))]
    series = {"model": [r["truth_ratio"] for r in rows if r["set"] == "forget"]}
    if reference is not None:
        series["retain model"] = [reference["forget"][i]["truth_ratio"] for i in sorted(reference["forget"])]
    plots.append(
        str(
            plot_histograms(
                series,
                out / "plots" / "tofu_truth_ratio.png",
                "truth ratio R (forget set)",
                "Forget-set truth ratios",
                log_x=True,
            ).relative_to(out)
        )
    )
    examples = [
        {
            "set": s,
            "prompt": r["question"],
            "expected": r["answer"],
            "generation": r["generation"],
            "score": r["rouge"],
        }
        for s in GENERATION_SETS
        for r in [x for x in rows if x["set"] == s][:2]
    ]
    notes = []
    if reference is None:
        notes.append(
            "no --retain-reference: forget quality is not computed and privleak uses the reference AUC 0.5"
        )
    write_benchmark_report(out, summary, examples, plots, notes)


def evaluate_tofu(
    model,
    tokenizer,
    data: TofuData,
    *,
    output_dir: str | Path,
    prompt_format: str = "auto",
    system_prompt: str | None = None,
    retain_reference: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every set, write ``tofu_items.jsonl``, ``tofu_summary.json``, ``report.md`` and ``plots/``;
    return the summary."""
    from llm_unlearn.evaluation.passes.answer_stats import (
        DEFAULT_SYSTEM_PROMPT,
        QAEncoder,
        answer_token_stats,
    )
    from llm_unlearn.evaluation.passes.inference import greedy_generate
    from llm_unlearn.evaluation.passes.runtime import pad_token_id

    reference = read_retain_reference(retain_reference) if retain_reference else None
    if reference is not None:
        _check_reference(reference, data)
    enc = QAEncoder(
        tokenizer, prompt_format, DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    )
    sets = {
        "forget": data.forget,
        "retain": data.retain,
        "real_authors": data.real_authors,
        "world_facts": data.world_facts,
        "holdout": data.holdout,
    }
    seqs, slots = _scored_sequences(enc, sets)
    stats = answer_token_stats(
        model, seqs, pad_id=pad_token_id(tokenizer), batch_size=batch_size, progress=progress
    )
    gen_keys = [(s, i) for s in GENERATION_SETS for i in range(len(sets[s]))]
    generations = greedy_generate(
        model,
        tokenizer,
        [],
        prompt_ids=[enc.prompt(sets[s][i].question) for s, i in gen_keys],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc="TOFU generations",
    )
    gen = dict(zip(gen_keys, generations))
    rows = [_item_row(s, i, it, stats, slots, gen) for s, items in sets.items() for i, it in enumerate(items)]
    if data.holdout and any(r.get("min_k") is None for r in rows if r["set"] in ("forget", "holdout")):
        raise UserError("some forget/holdout answers have no token to score (check the tokenizer)")

    metrics, headline, info = tofu_metrics(rows, reference)
    out = Path(output_dir)
    atomic_write_jsonl(out / "tofu_items.jsonl", rows)
    summary = make_summary(
        "tofu",
        headline,
        metrics,
        {s: len(v) for s, v in sets.items()},
        reference=info,
        config={
            **dict(config or {}),
            "forget_split": data.forget_split,
            "prompt_format": enc.format,
            "system_prompt": enc.system_prompt if enc.format == "chat" else None,
            "max_new_tokens": max_new_tokens,
            "min_k_percent": MIN_K_PERCENT,
        },
    )
    _write_tofu_outputs(out, summary, rows, reference)
    return summary


# ------------------------------------------------------------------------------ the registered benchmark
_POS = (1, None, False, False)


@dataclass
class TofuOptions:
    data: str | None = opt(None, "a TOFU directory", flag="--data", path=True)
    forget_split: str = opt("forget10", "TOFU: forget01 | forget05 | forget10", flag="--forget-split")
    retain_reference: str | None = opt(
        None,
        "the retain model's tofu_items.jsonl / muse_items.jsonl (forget quality; privleak's reference AUC)",
        flag="--retain-reference",
        path=True,
    )
    prompt_format: str = opt("auto", PROMPT_FORMAT_HELP, flag="--prompt-format", choices=PROMPT_FORMATS)
    system_prompt: str | None = opt(None, SYSTEM_PROMPT_HELP, flag="--system-prompt")
    limit: int | None = opt(None, "at most N items per set", flag="--limit", range=_POS)
    max_new_tokens: int | None = opt(
        None, "generation length (default 200)", flag="--max-new-tokens", range=_POS
    )
    batch_size: int = opt(16, "batch size", flag="--batch-size", range=_POS)


class TofuBenchmark:
    name = "tofu"
    summary = "TOFU (Maini et al. 2024): forget quality, model utility, privleak; --data is a TOFU directory"
    options = TofuOptions
    required = ("data",)
    exclusive = ()
    outputs = ("tofu_items.jsonl", "tofu_summary.json", "report.md", "plots")

    def inputs(self, opts: TofuOptions) -> list[str | None]:
        return [opts.data, opts.retain_reference]

    def check(self, opts: TofuOptions) -> TofuData:
        """The TOFU data (--limit items per set) and the retain reference, read before the model."""
        from llm_unlearn.data.benchmarks import load_tofu

        check_retain_reference(opts.retain_reference)
        data = load_tofu(opts.data, opts.forget_split)
        if opts.limit:
            for name in SETS:
                setattr(data, name, getattr(data, name)[: opts.limit])
        if opts.retain_reference:
            read_retain_reference(opts.retain_reference)  # a bad file fails before the model loads
        return data

    def run(self, model, tokenizer, data: TofuData, opts: TofuOptions, out_dir, progress, *, source=None):
        return evaluate_tofu(
            model,
            tokenizer,
            data,
            output_dir=out_dir,
            prompt_format=opts.prompt_format,
            system_prompt=opts.system_prompt,
            retain_reference=opts.retain_reference,
            batch_size=opts.batch_size,
            max_new_tokens=opts.max_new_tokens or 200,
            progress=progress,
            config=model_config(source, opts),
        )

    def text(self, summary: dict, out_dir) -> str:
        return f"{headline_text(summary)}\nresults in {out_dir}/ (tofu_summary.json, tofu_items.jsonl, report.md, plots/)"


register_benchmark(TofuBenchmark())

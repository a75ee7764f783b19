"""SemEval-2025 Task 4, registered as the benchmark ``semeval`` (the default of ``evaluate``).

Modules: :mod:`.evaluate` (:func:`evaluate_semeval`: generations, answer NLLs, MIA, the official
scores, its output files), :mod:`.checks` (input sanity checks), :mod:`.report` (its report.md and
plots). This package's ``__init__`` holds only the declarations and the wiring (no torch import).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from llm_unlearn.config.options import opt
from llm_unlearn.evaluation.benchmark import register_benchmark
from llm_unlearn.evaluation.metrics.semeval import MMLU_THRESHOLD

__all__ = ["SemevalOptions", "SemevalData", "SemevalBenchmark", "summary_text", "OUTPUTS"]

_POS = (1, None, False, False)
_NON_NEG = (0, None, False, False)

#: what ``evaluate`` writes (also: the names of outputs from before the marker file)
OUTPUTS = (
    "evaluation_results.json",
    "evaluation_results.jsonl",
    "generations.jsonl",
    "mia.jsonl",
    "report.md",
    "plots",
    "mmlu",
    ".stages",
)


@dataclass
class SemevalOptions:
    data: str | None = opt(None, "forget/retain data (same layouts as train)", flag="--data", path=True)
    split: str | None = opt(None, "sub-directory / parquet split of --data, e.g. train", flag="--split")
    mia_data: str | None = opt(
        None, "directory with member.jsonl and nonmember.jsonl", flag="--mia-data", path=True
    )
    mmlu_data: str | None = opt(
        None, "MMLU data to compute the MMLU average (see `llm-unlearn mmlu`)", flag="--mmlu-data", path=True
    )
    mmlu_metrics: str | None = opt(
        None, "metrics.json with average_acc from an earlier MMLU run", flag="--mmlu-metrics", path=True
    )
    limit: int | None = opt(
        None,
        "at most N forget and N retain records in whole units, the member documents of the taken "
        "forget units and as many non-members (see README)",
        flag="--limit",
        range=_POS,
    )
    max_new_tokens: int | None = opt(
        None,
        "generation length (default 256; TOFU 200, MUSE VerbMem 128)",
        flag="--max-new-tokens",
        range=_POS,
    )
    batch_size: int = opt(16, "batch size of the fast mode", flag="--batch-size", range=_POS)
    official_compat: bool = opt(
        False,
        "one example at a time without padding, exactly like the organizers' script (slow)",
        switch=("--official-compat", True),
    )
    mmlu_threshold: float = opt(
        MMLU_THRESHOLD,
        "warn when the MMLU average is below this",
        flag="--mmlu-threshold",
        range=(0, 1, False, False),
    )
    mmlu_ntrain: int = opt(5, "MMLU shots with --mmlu-data", flag="--mmlu-ntrain", range=_NON_NEG)
    mmlu_n_instances: int | None = opt(
        None,
        "at most N MMLU test questions per subject with --mmlu-data",
        flag="--mmlu-n-instances",
        range=_POS,
    )
    prefix_cache: bool = opt(
        True,
        "MMLU: score every prompt whole instead of from its subject's shared few-shot prefix",
        switch=("--no-prefix-cache", False),
    )
    min_k_percent: float = opt(
        20, "k of the Min-K% and Min-K%++ attacks", flag="--min-k-percent", range=(0, 100, True, False)
    )


class SemevalData(NamedTuple):
    bundle: Any  # DataBundle, sliced by --limit
    mia: tuple[list, list] | None
    mmlu_average: float | None
    mmlu_loaded: Any


def _fmt_value(value: Any) -> str:
    return "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def summary_text(results: dict) -> str:
    """A few lines with the headline numbers of an evaluation."""
    lines = []
    for split in ("forget", "retain"):
        s = results.get(f"{split}-set")
        if s:
            lines.append(
                f"{split:>6}: regurgitation (ROUGE-L recall) {_fmt_value(s.get('overall-regurgitation-score'))}, "
                f"knowledge (exact match) {_fmt_value(s.get('overall-knowledge-score'))}"
            )
    lines.append(f"task aggregate (harmonic mean): {_fmt_value(results.get('harmonic-mean-task-aggregate'))}")
    if "mia_loss_acc" in results:
        ci = results.get("mia_loss_auc_interval") or {}
        auc_ci = f" (95 % interval {ci['low']:.3f}-{ci['high']:.3f})" if ci else ""
        score_ci = f" ({ci['mia_score_low']:.3f}-{ci['mia_score_high']:.3f})" if ci else ""
        lines.append(
            f"MIA loss AUC {_fmt_value(results['mia_loss_acc'])}{auc_ci} -> MIA score "
            f"{_fmt_value(results.get('mia_final_score'))}{score_ci}"
        )
    if "mmlu_average" in results:
        lines.append(f"MMLU average {_fmt_value(results['mmlu_average'])}")
    lines.append(f"aggregate score: {_fmt_value(results.get('aggregate-score'))}")
    return "\n".join(lines)


class SemevalBenchmark:
    name = "semeval"
    summary = "SemEval-2025 Task 4 evaluation (regurgitation, knowledge, MIA, MMLU, aggregate)"
    options = SemevalOptions
    required = ("data",)
    exclusive = (("mmlu_data", "mmlu_metrics"),)
    outputs = (*OUTPUTS, "semeval_summary.json")

    def inputs(self, opts: SemevalOptions) -> list[str | None]:
        return [opts.data, opts.mia_data, opts.mmlu_data, opts.mmlu_metrics]

    def check(self, opts: SemevalOptions) -> SemevalData:
        """The data (sliced by --limit in whole units), the MIA documents, the MMLU data or average."""
        from llm_unlearn.data.records import load_unlearning_data, read_mia_documents
        from llm_unlearn.data.slices import slice_data
        from llm_unlearn.evaluation.benchmarks.mmlu.data import load_mmlu, read_mmlu_metrics

        bundle = load_unlearning_data(opts.data, split=opts.split)
        members, nonmembers = read_mia_documents(opts.mia_data) if opts.mia_data else ([], [])
        # --limit: whole SemEval units, members with their forget records (data/slices.py)
        part = slice_data(bundle.forget, bundle.retain, opts.limit, members, nonmembers)
        bundle.forget, bundle.retain = part.forget, part.retain
        mia = (part.members, part.nonmembers) if opts.mia_data else None
        if mia is not None:
            from llm_unlearn.evaluation.benchmarks.semeval.checks import check_mia_sets

            check_mia_sets(*mia)
        mmlu_average = read_mmlu_metrics(opts.mmlu_metrics) if opts.mmlu_metrics else None
        mmlu_loaded = load_mmlu(opts.mmlu_data) if opts.mmlu_data else None
        return SemevalData(bundle, mia, mmlu_average, mmlu_loaded)

    def run(
        self, model, tokenizer, data: SemevalData, opts: SemevalOptions, out_dir, progress, *, source=None
    ):
        from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval
        from llm_unlearn.evaluation.report import semeval_summary, write_summary

        out = Path(out_dir)
        stages = _stages(source, opts, data.bundle, out)  # finished stages are reused when nothing changed
        mmlu_average = data.mmlu_average
        if data.mmlu_loaded is not None:
            mmlu_average = _mmlu_average(model, tokenizer, data.mmlu_loaded, opts, out, progress, stages)
        src = source if source is not None else _NoSource()
        config = {
            "model": src.model,
            "adapter": src.adapter,
            "tokenizer": src.tokenizer,
            "data": opts.data,
            "split": opts.split,
            "mia_data": opts.mia_data,
            "mmlu_data": opts.mmlu_data,
            "mmlu_metrics": opts.mmlu_metrics,
            "limit": opts.limit,
        }
        results = evaluate_semeval(
            model,
            tokenizer,
            data.bundle,
            mia=data.mia,
            mmlu_average=mmlu_average,
            max_new_tokens=opts.max_new_tokens or 256,
            batch_size=opts.batch_size,
            official_compat=opts.official_compat,
            output_dir=out,
            progress=progress,
            mmlu_threshold=opts.mmlu_threshold,
            min_k_percent=opts.min_k_percent,
            config=config,
            stages=stages,
        )
        n_items = {"forget": len(data.bundle.forget), "retain": len(data.bundle.retain)}
        if data.mia is not None:
            n_items.update(member=len(data.mia[0]), nonmember=len(data.mia[1]))
        summary = semeval_summary(results, n_items)  # the summary shape shared with every benchmark
        write_summary(out, summary)
        return summary

    def text(self, summary: dict, out_dir) -> str:
        return (
            f"{summary_text(summary['metrics'])}\n"
            f"results in {out_dir}/ (evaluation_results.json, report.md, generations.jsonl, plots/)"
        )


class _NoSource:
    model = adapter = tokenizer = gguf_file = None
    dtype = "auto"


def _mmlu_average(model, tokenizer, loaded, opts: SemevalOptions, out: Path, progress: bool, stages) -> float:
    from llm_unlearn.evaluation.benchmarks.mmlu import evaluate as mmlu
    from llm_unlearn.io_utils import path_fingerprint

    return stages.cached(
        "mmlu",
        lambda: mmlu.evaluate_mmlu(
            model,
            tokenizer,
            loaded,
            ntrain=opts.mmlu_ntrain,
            n_instances=opts.mmlu_n_instances,
            batch_size=opts.batch_size,
            output_dir=out / "mmlu",
            progress=progress,
            prefix_cache=opts.prefix_cache,
        )["average_acc"],
        data=path_fingerprint(opts.mmlu_data),
        ntrain=opts.mmlu_ntrain,
        n_instances=opts.mmlu_n_instances,
        batch_size=opts.batch_size,
    )


def _stages(source, opts: SemevalOptions, bundle, out: Path):
    """OUT/.stages: generations, answer NLLs, MIA statistics and the MMLU average, each kept once
    computed and reused by a later `evaluate` with the same model, data and options (a rerun after
    an interruption, e.g. a requeued Slurm job, only does what is missing). Delete it to recompute."""
    from llm_unlearn.io_utils import StageCache, path_fingerprint, sha256_file

    src = source if source is not None else _NoSource()
    mia_files = sorted(Path(opts.mia_data).glob("*member.jsonl")) if opts.mia_data else []
    inputs = {
        "model": path_fingerprint(src.model),
        "adapter": path_fingerprint(src.adapter),
        "tokenizer": path_fingerprint(src.tokenizer),
        "gguf_file": src.gguf_file,
        "dtype": src.dtype,
        "data": {p.name: sha256_file(p) for p in bundle.files},
        "mia": {p.name: sha256_file(p) for p in mia_files},
    }
    return StageCache(out / ".stages", inputs)


register_benchmark(SemevalBenchmark())

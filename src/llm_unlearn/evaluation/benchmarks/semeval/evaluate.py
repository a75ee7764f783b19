"""The SemEval-2025 Task 4 evaluation of a model: generations, scores, MIA, outputs.

:func:`evaluate_semeval` is the Python API (the demo and ``llm-unlearn evaluate`` call it). What it
computes is described in :mod:`llm_unlearn.evaluation.metrics.semeval`, :mod:`llm_unlearn.evaluation.metrics.mia` and
:mod:`llm_unlearn.evaluation.passes.inference`. Files written to ``output_dir`` (all atomically):

* ``evaluation_results.json`` / ``evaluation_results.jsonl``: the official keys plus ``mia_attacks``,
  ``timing``, ``config`` (and ``warnings``);
* ``generations.jsonl``: one row per forget/retain item;
* ``mia.jsonl``: one row per MIA document (when MIA documents were given);
* ``report.md``, ``plots/semeval_scores.png``, ``plots/mia_nll.png``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llm_unlearn.evaluation.benchmarks.semeval.checks import (
    MIN_ITEMS_PER_TASK,
    MIN_MIA_DOCUMENTS,
    check_mia_sets,
    sanity_warnings,
)
from llm_unlearn.evaluation.metrics.mia import attack_aucs, loss_interval_of_rows, zlib_ratio
from llm_unlearn.evaluation.metrics.semeval import (
    MMLU_THRESHOLD,
    rouge_recalls,
    score_generation_rows,
    semeval_results,
)
from llm_unlearn.evaluation.passes.inference import (
    answer_nll,
    document_statistics,
    greedy_generate,
    model_device,
)
from llm_unlearn.io_utils import StageCache

log = logging.getLogger(__name__)

__all__ = [
    "evaluate_semeval",
    "generation_rows",
    "mia_rows",
    "write_outputs",
    "mmlu_warning",
    "check_mia_sets",
    "sanity_warnings",
    "MIN_ITEMS_PER_TASK",
    "MIN_MIA_DOCUMENTS",
]

RESULTS_JSON = "evaluation_results.json"
RESULTS_JSONL = "evaluation_results.jsonl"
GENERATIONS_JSONL = "generations.jsonl"
MIA_JSONL = "mia.jsonl"
REPORT_MD = "report.md"


def _stage(seconds: float, items: int) -> dict[str, float | int]:
    return {
        "seconds": round(seconds, 4),
        "items": items,
        "items_per_s": round(items / seconds, 3) if seconds > 0 and items else None,
    }


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def generation_rows(
    records: Sequence[Any], generations: Sequence[str], nlls: Sequence[float | None]
) -> list[dict]:
    """Scored ``generations.jsonl`` rows from records (``Record`` objects or dicts with id, input,
    output, task, split), the model's outputs and the answer NLLs."""
    rows = [
        {
            "id": _field(r, "id"),
            "task": _field(r, "task"),
            "split": _field(r, "split"),
            "input": _field(r, "input"),
            "expected_output": _field(r, "output"),
            "model_output": g,
        }
        for r, g in zip(records, generations)
    ]
    scored = score_generation_rows(rows)
    for row, nll in zip(scored, nlls):
        row["nll"] = nll
    return scored


def mia_rows(
    documents: Sequence[Mapping[str, str]], which: str, stats: Sequence[Mapping[str, Any]]
) -> list[dict]:
    """``mia.jsonl`` rows for one set (``which`` = "member" or "nonmember")."""
    rows = []
    for doc, st in zip(documents, stats):
        nll = st["nll"]
        n_tokens = int(st["n_tokens"])
        rows.append(
            {
                "id": doc["id"],
                "set": which,
                "nll": nll,
                "n_tokens": n_tokens,
                "zlib_ratio": zlib_ratio(nll, n_tokens, doc["document"]) if n_tokens else float("nan"),
                "min_k": st["min_k"],
                "min_k_plus_plus": st["min_k_plus_plus"],
            }
        )
    return rows


def mmlu_warning(mmlu_average: float | None, threshold: float = MMLU_THRESHOLD) -> str | None:
    """The organizers' warning text when the MMLU average is below the threshold, else None."""
    if mmlu_average is None or mmlu_average >= threshold:
        return None
    return (
        f"MMLU average {mmlu_average:.4f} is below the threshold {threshold} (75% of the original model's "
        "accuracy): such a checkpoint may not be considered in the challenge ranking"
    )


def _model_name(model) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_name_or_path", None) or getattr(cfg, "name_or_path", None) or None


def _generate_and_score_nll(
    model, tokenizer, records, stages, timing, *, max_new_tokens, batch_size, official_compat, progress
) -> tuple[list[str], list[float | None]]:
    """The greedy generations and answer NLLs of ``records`` (each a stage of ``stages``), timed."""
    ids = [r.id for r in records]
    t0 = time.perf_counter()
    generations = stages.cached(
        "generations",
        lambda: greedy_generate(
            model,
            tokenizer,
            [r.input for r in records],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            official_compat=official_compat,
            progress=progress,
            desc="generate",
            # batched mode: an answer the model still reproduces costs one forward, not one step a token
            expected=[r.output for r in records],
        ),
        ids=ids,
        texts=_digest(r.input for r in records),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        official_compat=official_compat,
    )
    timing["generation"] = _stage(time.perf_counter() - t0, len(records))

    t0 = time.perf_counter()
    nlls = stages.cached(
        "answer_nll",
        lambda: answer_nll(
            model,
            tokenizer,
            [r.input for r in records],
            [r.output for r in records],
            batch_size=batch_size,
            official_compat=official_compat,
            progress=progress,
        ),
        ids=ids,
        texts=_digest(t for r in records for t in (r.input, r.output)),
        batch_size=batch_size,
        official_compat=official_compat,
    )
    timing["answer_nll"] = _stage(time.perf_counter() - t0, len(records))
    return generations, nlls


def _scored_rows(records, generations, nlls, timing, warnings_list: list[str]) -> list[dict]:
    """The scored generation rows, timed; items of no known kind are reported in ``warnings_list``."""
    t0 = time.perf_counter()
    rows = generation_rows(records, generations, nlls)
    unknown = [r["id"] for r in rows if r["kind"] is None]
    if unknown:
        msg = (
            f"{len(unknown)} item id(s) end in neither sc<digit> nor qa<digit> (e.g. {unknown[0]!r}): they are "
            "generated but not scored"
        )
        log.warning(msg)
        warnings_list.append(msg)
    timing["scoring"] = _stage(time.perf_counter() - t0, len(records))
    return rows


def _membership_inference(
    model, tokenizer, mia, stages, timing, *, batch_size, official_compat, min_k_percent, progress
) -> tuple[list[dict], list[dict], dict[str, float | None]]:
    """``(member rows, non-member rows, AUC per attack)`` from the documents' statistics (a stage of
    ``stages``), timed. A non-finite loss-attack AUC is an error."""
    members, nonmembers = mia
    t0 = time.perf_counter()
    docs = list(members) + list(nonmembers)
    stats = stages.cached(
        "mia",
        lambda: document_statistics(
            model,
            tokenizer,
            [d["document"] for d in docs],
            batch_size=batch_size,
            official_compat=official_compat,
            k_percent=min_k_percent,
            progress=progress,
        ),
        ids=[d["id"] for d in docs],
        texts=_digest(d["document"] for d in docs),
        n_members=len(members),
        batch_size=batch_size,
        official_compat=official_compat,
        min_k_percent=min_k_percent,
    )
    member_rows = mia_rows(members, "member", stats[: len(members)])
    nonmember_rows = mia_rows(nonmembers, "nonmember", stats[len(members) :])
    aucs = attack_aucs(member_rows, nonmember_rows)
    timing["mia"] = _stage(time.perf_counter() - t0, len(docs))
    if aucs["loss"] is None:
        raise ValueError("the loss attack has a non-finite NLL (a document of at most one token?)")
    return member_rows, nonmember_rows, aucs


def _results_config(
    model,
    bundle,
    n_members: int,
    n_nonmembers: int,
    *,
    official_compat: bool,
    max_new_tokens: int,
    batch_size: int,
    min_k_percent: float,
    mmlu_threshold: float,
    config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``config`` key of the results: model, options, item counts, device, dtype, data files, and
    the caller's extra entries ``config``."""
    device = model_device(model)
    dtype = next(iter(model.parameters())).dtype if any(True for _ in model.parameters()) else None
    return {
        "model": _model_name(model),
        "official_compat": bool(official_compat),
        "max_new_tokens": int(max_new_tokens),
        "batch_size": int(batch_size),
        "min_k_percent": float(min_k_percent),
        "mmlu_threshold": float(mmlu_threshold),
        "n_forget": len(bundle.forget),
        "n_retain": len(bundle.retain),
        "n_members": n_members,
        "n_nonmembers": n_nonmembers,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "data_files": [str(p) for p in getattr(bundle, "files", [])],
        **dict(config or {}),
    }


def _checked_inputs(bundle, mia, max_new_tokens: int) -> list[str]:
    """Refuse unusable options or MIA sets; return (and log) the warnings about noisy scores. Also
    does the one-time imports (rouge_score/nltk, scikit-learn), so that they are not timed."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if mia is not None:
        check_mia_sets(*mia)
    warnings_list: list[str] = sanity_warnings(bundle, mia)
    for w in warnings_list:
        log.warning(w)
    rouge_recalls("warm up", "warm up")
    import sklearn.metrics  # noqa: F401

    return warnings_list


def evaluate_semeval(
    model,
    tokenizer,
    bundle,
    *,
    mia: tuple[Sequence[Mapping[str, str]], Sequence[Mapping[str, str]]] | None = None,
    mmlu_average: float | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    official_compat: bool = False,
    output_dir: str | Path | None = None,
    progress: bool = True,
    mmlu_threshold: float = MMLU_THRESHOLD,
    min_k_percent: float = 20,
    config: Mapping[str, Any] | None = None,
    stages: StageCache | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` the SemEval-2025 Task 4 way and return the results dict.

    ``bundle``: a :class:`~llm_unlearn.data.records.DataBundle` (its forget and retain records are
    generated from and scored). ``mia``: ``(members, nonmembers)``, lists of ``{"id", "document"}``
    (as :func:`~llm_unlearn.data.records.read_mia_documents` returns). ``mmlu_average``: the MMLU
    accuracy (from ``metrics.json`` or :func:`~llm_unlearn.evaluation.benchmarks.mmlu.evaluate.evaluate_mmlu`). Without MIA
    or MMLU the final ``aggregate-score`` is -1, as in the organizers' script. ``official_compat``: the
    organizers' one-at-a-time passes instead of the batched ones (see
    :func:`~llm_unlearn.evaluation.passes.inference.select_passes`). ``config``: extra entries for the
    ``config`` key of the results. With ``output_dir`` every output file is written there.
    ``stages``: keeps the generations, answer NLLs and MIA statistics as each stage finishes, and
    reuses them when the stage's inputs are unchanged (resume after an interruption).
    """
    t_start = time.perf_counter()
    records = list(bundle.forget) + list(bundle.retain)
    warnings_list = _checked_inputs(bundle, mia, max_new_tokens)
    timing: dict[str, Any] = {}
    stages = stages or _NoStages()
    passes = {"batch_size": batch_size, "official_compat": official_compat, "progress": progress}
    generations, nlls = _generate_and_score_nll(
        model, tokenizer, records, stages, timing, max_new_tokens=max_new_tokens, **passes
    )
    rows = _scored_rows(records, generations, nlls, timing, warnings_list)
    member_rows: list[dict] = []
    nonmember_rows: list[dict] = []
    aucs: dict[str, float | None] | None = None
    if mia is not None:
        member_rows, nonmember_rows, aucs = _membership_inference(
            model, tokenizer, mia, stages, timing, min_k_percent=min_k_percent, **passes
        )

    results = semeval_results(rows, mia_auc=aucs["loss"] if aucs else None, mmlu_average=mmlu_average)
    mmlu_msg = mmlu_warning(mmlu_average, mmlu_threshold)
    if mmlu_msg:
        log.warning(mmlu_msg)
        warnings_list.append(mmlu_msg)
    if aucs is not None:
        results["mia_attacks"] = aucs
        results["mia_loss_auc_interval"] = loss_interval_of_rows(member_rows, nonmember_rows)
    timing["total_seconds"] = round(time.perf_counter() - t_start, 4)
    results["timing"] = timing
    results["config"] = _results_config(
        model,
        bundle,
        len(member_rows),
        len(nonmember_rows),
        official_compat=official_compat,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        min_k_percent=min_k_percent,
        mmlu_threshold=mmlu_threshold,
        config=config,
    )
    results["warnings"] = warnings_list
    if output_dir is not None:
        write_outputs(output_dir, results, rows, member_rows + nonmember_rows)
    return results


class _NoStages:
    def cached(self, stage, compute, **stage_inputs):
        return compute()


def _digest(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def write_outputs(
    output_dir: str | Path, results: Mapping[str, Any], rows: Sequence[Mapping], mia: Sequence[Mapping]
) -> Path:
    """Write every output file of an evaluation into ``output_dir`` (atomically, file by file)."""
    from llm_unlearn.evaluation.benchmarks.semeval.report import (
        plot_mia_nll,
        plot_semeval_scores,
        write_report,
    )
    from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / GENERATIONS_JSONL, rows)
    if mia:
        atomic_write_jsonl(out / MIA_JSONL, mia)
    plot_semeval_scores(results, out / "plots" / "semeval_scores.png")
    if mia:
        plot_mia_nll(mia, out / "plots" / "mia_nll.png", auc=results.get("mia_loss_acc"))
    write_report(out / REPORT_MD, results, rows, mia)
    atomic_write_jsonl(out / RESULTS_JSONL, [results])
    atomic_write_json(out / RESULTS_JSON, results)  # last: its presence means the evaluation finished
    return out

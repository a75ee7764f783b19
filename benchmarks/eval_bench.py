"""Evaluation benchmarks at a realistic size (used by bench.py; ``make bench`` runs both).

* :func:`mmlu_bench`: MMLU scored from each subject's shared few-shot prefix (the default) against
  scoring every prompt whole (``--no-prefix-cache``, the previous batched path), on a randomly
  initialised model of the ``small`` shape (OLMo-2, hidden 512, 8 layers, vocabulary 8192), with
  5-shot MMLU-format prompts of real length built by :func:`mmlu_fixture`. Timed runs alternate the
  two paths (median of ``repeats``); float32 predictions must be identical; the same comparison is
  repeated once in bfloat16 (agreement reported).
* :func:`semeval_bench`: ``evaluate_semeval`` batched against ``official_compat=True`` (the organizers'
  one-at-a-time loop) on a ``small``-shape model that has memorized a slice of the real SemEval-2025
  Task 4 data (``../shared/data/semeval25``: real inputs and answer lengths), ``max_new_tokens`` 256 with
  stopping at EOS, float32; items/s per stage (generation, answer NLL, MIA), median of ``repeats`` runs
  per mode, and the scores of both.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
# beside the checkout (../shared), or inside it (a copy of the working tree with shared/, e.g. on a GPU host)
SEMEVAL = next(
    (p for p in (REPO.parent / "shared" / "data" / "semeval25", REPO / "shared" / "data" / "semeval25")
     if (p / "train" / "forget.jsonl").is_file()),
    REPO.parent / "shared" / "data" / "semeval25",
)  # fmt: skip
MEMORIZE_BATCH = 8
SMALL = {"hidden": 512, "layers": 8, "heads": 8, "intermediate": 2048, "vocab": 8192}

_FALLBACK_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can about out them "
    "what some could into than its time only other then these two may first any like now my such make over "
    "our even most me state after also made many did must before back see through way where get much go well "
    "your know should down work year because come people just say each those take day good how long own too "
    "little use us very great still men here life both between old under last never place same another think "
    "house while high right might came off find states since used give against three himself look few general "
    "hand school part small american home during number again mrs around thought went without however govern "
    "market energy cell theory law court value function group protein acid river price treaty equation"
).split()


def _words(n_texts: int = 400) -> list[str]:
    """A vocabulary of real words: from the SemEval data when present, else a fixed list."""
    words: list[str] = []
    f = SEMEVAL / "train" / "retain.jsonl"
    if f.is_file():
        for line in f.read_text(encoding="utf-8").splitlines()[:n_texts]:
            row = json.loads(line)
            words += [w.strip(".,;:!?\"'()") for w in (row["input"] + " " + row["output"]).split()]
    words = [w for w in words if w.isalpha()]
    return words if len(words) > 1000 else list(_FALLBACK_WORDS) * 8


def mmlu_fixture(n_subjects: int = 2, n_test: int = 12, seed: int = 0) -> dict[str, dict[str, list]]:
    """Synthetic MMLU in ``load_mmlu``'s form, with the lengths of the real benchmark: per question a
    stem of 25-110 words and four 1-12-word choices (5-shot prompts of about 500-1000 tokens with the
    benchmark's tokenizer, questions of about 40-150), 5 dev questions per subject. Deterministic."""
    from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import MMLUQuestion

    rng = random.Random(seed)
    vocab = _words()
    subjects = ["college_biology", "high_school_macroeconomics", "professional_law", "world_religions"]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))

    def question(subject: str) -> MMLUQuestion:
        stem = text(25, 110).capitalize() + "?"
        choices = tuple(text(1, 12) for _ in range(4))
        return MMLUQuestion(subject, stem, choices, rng.choice("ABCD"))  # type: ignore[arg-type]

    return {
        s: {"dev": [question(s) for _ in range(5)], "test": [question(s) for _ in range(n_test)]}
        for s in subjects[:n_subjects]
    }


def _small_model(
    shape: dict, vocab: int, dtype: torch.dtype, device: torch.device, seed: int, tokenizer=None
):
    from transformers import Olmo2Config, Olmo2ForCausalLM

    cfg = Olmo2Config(
        vocab_size=vocab,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0,
        bos_token_id=tokenizer.bos_token_id if tokenizer is not None else 1,
        eos_token_id=tokenizer.eos_token_id if tokenizer is not None else 2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Olmo2ForCausalLM(cfg)
    return model.to(dtype).eval()


def _mmlu_run(model, tok, data, prefix_cache: bool, batch_size: int, out: Path) -> tuple[float, list[dict]]:
    from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import evaluate_mmlu

    t0 = time.perf_counter()
    evaluate_mmlu(
        model,
        tok,
        data,
        ntrain=5,
        batch_size=batch_size,
        output_dir=out,
        progress=False,
        prefix_cache=prefix_cache,
    )
    dt = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return dt, rows


def mmlu_bench(
    device: torch.device,
    workdir: Path,
    *,
    n_subjects: int = 2,
    n_test: int = 12,
    batch_size: int = 8,
    repeats: int = 3,
    bf16: bool = True,
    small: dict[str, int] | None = None,
    seed: int = 0,
    progress=None,
) -> dict[str, Any]:
    """Prefix-cached vs whole-prompt MMLU (see the module docstring). ``progress``: a factory
    ``(units, total_weight) -> harness.Progress`` (bench.py's), or None for no progress lines."""
    from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import format_example
    from llm_unlearn.tiny import train_bpe_tokenizer

    # steps: tokenizer + model, 2 warm-ups, the timed runs (whole prompts weigh ~3 prefix-cached
    # runs), the bfloat16 pair
    prog = _harness().open_progress(progress, 3 + 2 * repeats + (2 if bf16 else 0),
                                    2 + 1 + 4 * repeats + (4 if bf16 else 0))  # fmt: skip
    prog.begin(
        f"MMLU fixture ({n_subjects} subject(s) x {n_test} questions), tokenizer and model",
        weight=2,
        force=True,
    )

    shape = dict(SMALL, **(small or {}))
    data = mmlu_fixture(n_subjects, n_test, seed)
    texts = [format_example(q) for s in data.values() for split in s.values() for q in split]
    tok = train_bpe_tokenizer(texts + _words()[:20000:50], vocab_size=min(shape["vocab"], 4096))
    model = _small_model(shape, shape["vocab"], torch.float32, device, seed)
    n = sum(len(s["test"]) for s in data.values())
    # one untimed call of each path (warm-up), then alternate
    prog.begin("warm-up calls (2 questions per subject, both paths)", weight=1)
    _mmlu_run(model, tok, {k: {"dev": v["dev"], "test": v["test"][:2]} for k, v in data.items()}, True, 2,
              workdir / "mmlu-warm-a")  # fmt: skip
    _mmlu_run(model, tok, {k: {"dev": v["dev"], "test": v["test"][:2]} for k, v in data.items()}, False, 2,
              workdir / "mmlu-warm-b")  # fmt: skip
    times: dict[str, list[float]] = {"prefix_cache": [], "whole_prompt": []}
    rows: dict[str, list[dict]] = {}
    for r in range(repeats):
        order = ("prefix_cache", "whole_prompt") if r % 2 == 0 else ("whole_prompt", "prefix_cache")
        for name in order:
            prog.begin(
                f"repeat {r + 1}/{repeats}: {name}, {n} questions", weight=1 if name == "prefix_cache" else 3
            )
            dt, rows[name] = _mmlu_run(
                model, tok, data, name == "prefix_cache", batch_size, workdir / f"mmlu-{name}"
            )
            times[name].append(dt)
    lengths = _prompt_lengths(tok, data)
    out: dict[str, Any] = {
        "model": {**shape, "dtype": "float32", "tokenizer_vocab": len(tok)},
        "questions": n,
        "subjects": n_subjects,
        "ntrain": 5,
        "batch_size": batch_size,
        "prompt_tokens": lengths,
    }
    for name in times:
        med = statistics.median(times[name])
        out[name] = {
            "seconds": round(med, 3),
            "seconds_runs": [round(x, 3) for x in times[name]],
            "questions_per_s": round(n / med, 3),
        }
    pc = out["prefix_cache"]
    pc["speedup"] = round(out["whole_prompt"]["seconds"] / pc["seconds"], 2)
    pc.update(_agreement(rows["prefix_cache"], rows["whole_prompt"]))
    if bf16:
        model = model.to(torch.bfloat16)
        t = {}
        for name in ("prefix_cache", "whole_prompt"):
            prog.begin(f"bfloat16: {name}, {n} questions", weight=1 if name == "prefix_cache" else 3)
            t[name], rows[name] = _mmlu_run(
                model, tok, data, name == "prefix_cache", batch_size, workdir / f"mmlu-bf16-{name}"
            )
        pc["bfloat16"] = {
            "speedup": round(t["whole_prompt"] / t["prefix_cache"], 2),
            **_agreement(rows["prefix_cache"], rows["whole_prompt"]),
        }
    return out


def _prompt_lengths(tok, data) -> dict[str, float]:
    from llm_unlearn.evaluation.benchmarks.mmlu.evaluate import build_prompt, gen_prompt

    prefix, full = [], []
    for s, v in data.items():
        prefix.append(len(tok(gen_prompt(v["dev"], s, 5)).input_ids))
        full += [len(tok(build_prompt(tok, v["dev"], q, 5)[0]).input_ids) for q in v["test"]]
    return {
        "prefix_mean": round(statistics.mean(prefix), 1),
        "prompt_mean": round(statistics.mean(full), 1),
        "prompt_min": min(full),
        "prompt_max": max(full),
    }


def _agreement(a: list[dict], b: list[dict]) -> dict[str, Any]:
    key = lambda r: (r["subject"], r["index"])  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(a, b))
    diff = max(abs(x["probs"][c] - y["probs"][c]) for x, y in zip(a, b) for c in "ABCD")
    return {
        "agreement": round(same / len(a), 4),
        "identical_predictions": same == len(a),
        "probs_max_abs_diff": diff,
    }


# ----------------------------------------------------------------------------- SemEval evaluation
def semeval_slice(
    n_per_split: int, n_mia: int
) -> tuple[list[dict], list[dict], list[dict], list[dict]] | None:
    """The first records of each (task, sc/qa) kind in turn, ``n_per_split`` forget and retain; the
    first ``n_mia`` member and non-member documents. None when the data is absent."""
    if not (SEMEVAL / "train" / "forget.jsonl").is_file():
        return None

    def read(path: Path) -> list[dict]:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

    def pick(rows: list[dict]) -> list[dict]:
        groups: dict[tuple[str, bool], list[dict]] = {}
        for r in rows:
            groups.setdefault((r["task"], "qa" in r["id"][-4:]), []).append(r)
        out, i = [], 0
        keys = sorted(groups)
        while len(out) < n_per_split:
            g = groups[keys[i % len(keys)]]
            j = i // len(keys)
            if j < len(g):
                out.append(g[j])
            i += 1
        return out

    forget = pick(read(SEMEVAL / "train" / "forget.jsonl"))
    retain = pick(read(SEMEVAL / "train" / "retain.jsonl"))
    members = read(SEMEVAL / "mia" / "member.jsonl")[:n_mia]
    nonmembers = read(SEMEVAL / "mia" / "nonmember.jsonl")[:n_mia]
    return forget, retain, members, nonmembers


def memorize(model, tok, records: list[dict], *, epochs: int, lr: float, batch_size: int, seed: int) -> dict:
    """Train ``model`` on the prompt's tokens as the evaluation encodes it (``tok(input)``), then the
    answer's tokens and EOS, with the loss on the answer and EOS only: exactly what greedy generation
    from the evaluation's prompt must reproduce (and stop after). The finetune trainer
    (``finetune.memorize``): rows sorted by length cut into batches whose order is shuffled every epoch,
    AdamW with 10 warm-up steps and linear decay to 5%, no autocast."""
    from llm_unlearn.finetune import memorize as train

    torch.manual_seed(seed)
    seqs, starts = [], []
    for r in records:
        prompt = list(tok(r["input"]).input_ids)
        answer = list(tok(r["output"], add_special_tokens=False).input_ids)
        seqs.append(prompt + answer + [tok.eos_token_id])
        starts.append(len(prompt))
    t0 = time.perf_counter()
    info = train(
        model,
        tok,
        seqs,
        label_from=starts,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        batching="sorted",
        warmup_steps=10,
        lr_floor=0.05,
        dtype="float32",
        progress=False,
    )
    return {
        "epochs": epochs,
        "steps": info["steps"],
        "final_epoch_answer_loss": round(info["final_epoch_loss"], 5),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def prepare_semeval(
    device: torch.device,
    workdir: Path,
    *,
    n_per_split: int = 16,
    n_mia: int = 8,
    epochs: int = 20,
    lr: float = 2e-3,
    small: dict[str, int] | None = None,
    seed: int = 0,
    model_cache: Path | None = None,
):
    """``(model, tokenizer, bundle, mia, info)``: the slice, its tokenizer, and the small-shape model
    that has memorized it (reused from ``model_cache`` when that holds the same setup); None without
    the data."""
    from llm_unlearn.data.records import load_unlearning_data
    from llm_unlearn.tiny import train_bpe_tokenizer

    picked = semeval_slice(n_per_split, n_mia)
    if picked is None:
        return None
    forget, retain, members, nonmembers = picked
    shape = dict(SMALL, **(small or {}))
    data_dir = workdir / "semeval-slice"
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("forget", forget), ("retain", retain)):
        (data_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    bundle = load_unlearning_data(data_dir)
    mia = ([{"id": d["id"], "document": d["document"]} for d in members],
           [{"id": d["id"], "document": d["document"]} for d in nonmembers])  # fmt: skip
    texts = [r["input"] + " " + r["output"] for r in forget + retain] + [
        d["document"] for d in members + nonmembers
    ]
    tok = train_bpe_tokenizer(texts, vocab_size=min(shape["vocab"], 4096))
    model = _small_model(shape, len(tok), torch.float32, device, seed, tokenizer=tok)
    # "prompt+answer": the memorized sequence is the evaluation's prompt tokens + the answer's tokens
    key = json.dumps(
        ["prompt+answer", n_per_split, epochs, lr, MEMORIZE_BATCH, shape, seed, len(tok)], sort_keys=True
    )
    saved = model_cache / "memorized.pt" if model_cache else None
    if saved is not None and saved.is_file() and torch.load(saved)["key"] == key:
        blob = torch.load(saved)
        model.load_state_dict(blob["state"])
        mem = dict(blob["info"], reused_from=str(saved))
    else:
        mem = memorize(
            model, tok, forget + retain, epochs=epochs, lr=lr, batch_size=MEMORIZE_BATCH, seed=seed
        )
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "state": model.state_dict(), "info": mem}, saved)
    model.eval()
    answer_tokens = [len(tok(r["output"], add_special_tokens=False).input_ids) for r in forget + retain]
    info = {
        "data": "SemEval-2025 Task 4 train slice (../shared/data/semeval25)",
        "model": {
            **{k: shape[k] for k in ("hidden", "layers", "heads", "intermediate")},
            "vocab": len(tok),
            "dtype": "float32",
            "memorize": mem,
        },  # fmt: skip
        "items": len(bundle.forget) + len(bundle.retain),
        "mia_documents": len(members) + len(nonmembers),
        "answer_tokens": {"median": statistics.median(answer_tokens), "max": max(answer_tokens)},
    }
    return model, tok, bundle, mia, info


def semeval_bench(
    device: torch.device,
    workdir: Path,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    repeats: int = 3,
    progress=None,
    **prepare_kw,
) -> dict[str, Any] | None:
    """Batched vs official-compat evaluation at a realistic size (see the module docstring); None
    without the SemEval data. ``prepare_kw``: see :func:`prepare_semeval`; ``progress``: as in
    :func:`mmlu_bench`."""
    import types

    from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval

    # steps and weights (one batched run = 1, an official-compat run ~1.6, memorizing ~8 of them
    # unless the model comes from the cache)
    cache = prepare_kw.get("model_cache")
    w_prep = 1.0 if cache is not None and (Path(cache) / "memorized.pt").is_file() else 8.0
    prog = _harness().open_progress(progress, 4 + 2 * repeats, w_prep + 0.5 + 2.6 * (1 + repeats))
    prog.begin("SemEval slice, tokenizer, memorizing the model (20 epochs; cached models are reused)",
               weight=w_prep, force=True)  # fmt: skip
    prepared = prepare_semeval(device, workdir, **prepare_kw)
    if prepared is None:
        return None
    model, tok, bundle, mia, info = prepared
    kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    warm = types.SimpleNamespace(forget=bundle.forget[:2], retain=bundle.retain[:2], files=[])
    prog.begin("warm-up calls (2 items, both modes)", weight=0.5)
    with _harness().quiet_small_splits():
        evaluate_semeval(model, tok, warm, **kw)
        evaluate_semeval(model, tok, warm, official_compat=True, **kw)
    n_items = info["items"]
    out: dict[str, Any] = {**info, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    res: dict[str, Any] = {}
    runs: dict[str, list[dict]] = {"batched": [], "official_compat": []}
    for (
        name
    ) in runs:  # one untimed run per mode writes the outputs (report, plots) whose generations are compared
        prog.begin(f"{name}: untimed run writing the outputs ({n_items} items)",
                   weight=1.6 if name == "official_compat" else 1.0)  # fmt: skip
        evaluate_semeval(model, tok, bundle, mia=mia, official_compat=name == "official_compat",
                         output_dir=workdir / f"semeval-{name}", **kw)  # fmt: skip
    for r in range(repeats):  # timed: no output files, the two modes alternate
        order = ("batched", "official_compat") if r % 2 == 0 else ("official_compat", "batched")
        for name in order:
            prog.begin(f"repeat {r + 1}/{repeats}: {name} ({n_items} items)",
                       weight=1.6 if name == "official_compat" else 1.0)  # fmt: skip
            t0 = time.perf_counter()
            res[name] = evaluate_semeval(
                model, tok, bundle, mia=mia, official_compat=name == "official_compat", **kw
            )
            runs[name].append({"seconds": time.perf_counter() - t0, "timing": res[name]["timing"]})
    gens = {name: _generations(workdir / f"semeval-{name}") for name in runs}
    nlls = {name: _answer_nlls(workdir / f"semeval-{name}") for name in runs}
    for name, rs in runs.items():
        secs = [x["seconds"] for x in rs]
        stages = {}
        for stage in ("generation", "answer_nll", "mia"):
            s = [x["timing"][stage]["seconds"] for x in rs if isinstance(x["timing"].get(stage), dict)]
            if s:
                items = rs[0]["timing"][stage]["items"]
                stages[stage] = {
                    "seconds": round(statistics.median(s), 3),
                    "items_per_s": round(items / statistics.median(s), 2),
                }
        out[name] = {
            "seconds": round(statistics.median(secs), 3),
            "seconds_runs": [round(x, 3) for x in secs],
            "items_per_s": round(n_items / statistics.median(secs), 3),
            "stages": stages,
            "harmonic-mean-task-aggregate": res[name]["harmonic-mean-task-aggregate"],
            "aggregated-terms": [round(x, 4) for x in res[name]["aggregated-terms"]],
            "mia_loss_auc": res[name].get("mia_loss_acc"),
            "new_tokens_mean": round(
                statistics.mean(len(tok(g, add_special_tokens=False).input_ids) for g in gens[name]), 1
            ),
        }
    out["speedup"] = round(out["official_compat"]["seconds"] / out["batched"]["seconds"], 2)
    out["stage_speedups"] = {
        s: round(out["official_compat"]["stages"][s]["seconds"] / out["batched"]["stages"][s]["seconds"], 2)
        for s in out["batched"]["stages"]
        if s in out["official_compat"]["stages"] and out["batched"]["stages"][s]["seconds"] > 0
    }
    a, b = res["batched"], res["official_compat"]
    out["aggregate_abs_diff"] = abs(a["harmonic-mean-task-aggregate"] - b["harmonic-mean-task-aggregate"])
    out["terms_max_abs_diff"] = max(
        (abs(x - y) for x, y in zip(a["aggregated-terms"], b["aggregated-terms"])), default=0.0
    )
    out["identical_generations"] = round(
        sum(x == y for x, y in zip(gens["batched"], gens["official_compat"])) / n_items, 4
    )
    # answer NLLs: float32, summed in another order (other matrix-product blocking, causal kernel instead
    # of a mask). Each layer's products reduce over at most K = intermediate terms, a relative error of
    # about sqrt(K) * u (u = 2**-24) per layer; over L layers the logits move by about
    # L * sqrt(K) * u * |logit| and an NLL (log-sum-exp minus a logit) by as much: the tolerance is
    # L * sqrt(K) * u * max(1, |nll|) (small shape: 8 * sqrt(2048) * 6e-8 = 2.2e-5 relative)
    rel = info["model"]["layers"] * info["model"]["intermediate"] ** 0.5 * 2.0**-24
    pairs = [
        (x, y) for x, y in zip(nlls["batched"], nlls["official_compat"]) if x is not None and y is not None
    ]
    out["answer_nll"] = {
        "compared": len(pairs),
        "max_abs_diff": max((abs(x - y) for x, y in pairs), default=0.0),
        "max_rel_diff": max((abs(x - y) / max(1.0, abs(y)) for x, y in pairs), default=0.0),
        "tolerance_rel": rel,
    }
    out["answer_nll"]["within_tolerance"] = out["answer_nll"]["max_rel_diff"] <= rel
    out["scores_agree"] = (
        out["aggregate_abs_diff"] <= 0.005
        and out["terms_max_abs_diff"] <= 0.005
        and out["identical_generations"] == 1.0
        and out["answer_nll"]["within_tolerance"]
        and out["batched"]["mia_loss_auc"] == out["official_compat"]["mia_loss_auc"]
    )
    return out


def _harness():
    """benchmarks/harness.py (this file is loaded by path, as bench.py is)."""
    if "harness" in sys.modules:
        return sys.modules["harness"]
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness", Path(__file__).resolve().parent / "harness.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = mod
    spec.loader.exec_module(mod)
    return mod


def _generations(path: Path) -> list[str]:
    rows = [json.loads(x) for x in (path / "generations.jsonl").read_text().splitlines() if x.strip()]
    return [r["model_output"] for r in sorted(rows, key=lambda r: r["id"])]


def _answer_nlls(path: Path) -> list[float | None]:
    rows = [json.loads(x) for x in (path / "generations.jsonl").read_text().splitlines() if x.strip()]
    return [r.get("nll") for r in sorted(rows, key=lambda r: r["id"])]


def main(argv=None) -> dict[str, Any] | None:
    """``python benchmarks/eval_bench.py``: the realistic SemEval check alone (as in ``make bench``),
    written to ``benchmarks/results/eval-realistic-<device>.json``."""
    import argparse
    import os
    import platform
    import tempfile

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model-cache", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load0 = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="llm-unlearn-eval-") as tmp:
        cache = Path(args.model_cache) if args.model_cache else None
        res = semeval_bench(torch.device(args.device), Path(tmp), model_cache=cache)
    if res is None:
        raise SystemExit("error: ../shared/data/semeval25 not found")
    res.update(
        threads=args.threads,
        torch=torch.__version__,
        platform=platform.platform(),
        loadavg_start=[round(x, 2) for x in load0],
        loadavg_end=[round(x, 2) for x in os.getloadavg()],
        seconds=round(time.time() - t0, 1),
    )
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).resolve().parent / "results" / f"eval-realistic-{args.device}.json"
    )
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(
        json.dumps(
            {k: res[k] for k in ("speedup", "stage_speedups", "scores_agree", "identical_generations")}
        )
    )
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()

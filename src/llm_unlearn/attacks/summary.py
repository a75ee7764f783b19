"""The attack stage's summary (the one summary shape), ``report.md``, ``attack_items.jsonl`` and the plot.

Per attack the forget and retain metrics of target -> unlearned -> attacked and the recovery of every
metric (:func:`llm_unlearn.attacks.recovery.recovery`, denominators shown):

* ``quantization_<scheme>``: attacked = the quantized unlearned model; plus the open-unlearning
  quantization robustness per metric;
* ``relearning``: on the held-out units only; attacked = after relearning; with a never-trained model
  its before / after and the open-unlearning relearning robustness per metric;
* ``prompts``: attacked forget metrics = the best template per item (the attacker's view); retain =
  the unlearned model's (prompt attacks do not change the model);
* ``logit_lens``: attacked ``forget_prob`` = the mean answer probability at the unlearned model's best
  layer; target and unlearned at their final layer.

``headline``: ``<attack>.recovery.<metric>`` for every attack and metric (None where undefined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_unlearn.attacks.recovery import quantization_robustness, recovery_table, relearning_robustness
from llm_unlearn.attacks.scoring import set_metrics
from llm_unlearn.evaluation.report import figure, fmt, make_summary, save_figure
from llm_unlearn.io_utils import atomic_write_json, atomic_write_jsonl, atomic_write_text

__all__ = ["build_summary", "write_outputs", "metrics_of", "render_report"]


def metrics_of(scored: dict[str, list[dict]]) -> dict[str, float | None]:
    return {**set_metrics("forget", scored["forget"]), **set_metrics("retain", scored["retain"])}


def _quantization(res: dict, base: dict) -> dict:
    out = {}
    for scheme, scored in res.items():
        att = metrics_of(scored)
        entry = {"recovery": recovery_table(base["target"], base["unlearned"], att)}
        entry["open_unlearning_quantization_robustness"] = {
            k: quantization_robustness(base["unlearned"][k], att[k]) for k in att if k.startswith("forget")
        }
        out[f"quantization_{scheme}"] = entry
    return out


def _relearning(res: dict) -> dict:
    t = metrics_of(res["target"])
    before, after = metrics_of(res["unlearned"]["before"]), metrics_of(res["unlearned"]["after"])
    entry: dict[str, Any] = {
        "recovery": recovery_table(t, before, after),
        "relearn_units": res["relearn_units"],
        "heldout_units": res["heldout_units"],
    }
    if res.get("never_trained"):
        nb, na = metrics_of(res["never_trained"]["before"]), metrics_of(res["never_trained"]["after"])
        entry["never_trained"] = {"before": nb, "after": na}
        entry["gap_after_relearning"] = {
            k: (after[k] - na[k]) if after[k] is not None and na[k] is not None else None for k in after
        }
        entry["open_unlearning_relearning_robustness"] = {
            k: relearning_robustness(before[k], after[k], nb[k], na[k])
            for k in before
            if k.startswith("forget")
        }
    return {"relearning": entry}


def _prompts(res: dict, base: dict) -> dict:
    att = {
        "forget_rouge": set_metrics("forget", res["best"])["forget_rouge"],
        "forget_prob": res["best_prob"],
    }
    att.update({k: v for k, v in base["unlearned"].items() if k.startswith("retain")})
    entry = {
        "recovery": recovery_table(base["target"], base["unlearned"], att),
        "per_template": res["per_template"],
        "wins": res["wins"],
    }
    if "never_trained_best" in res:  # the floor: what picking the best prompt gives a model that never knew
        entry["never_trained_best"] = res["never_trained_best"]
    return {"prompts": entry}


def _logit_lens(res: dict) -> dict:
    t, u = res["target"], res["unlearned"]
    if not u["layers"]:
        return {"logit_lens": {"recovery": {}, "per_model": res}}
    table = recovery_table(
        {"forget_prob": t["final"]["prob"], "forget_top1": t["final"]["top1"]},
        {"forget_prob": u["final"]["prob"], "forget_top1": u["final"]["top1"]},
        {"forget_prob": u["best"]["prob"], "forget_top1": max(r["top1"] for r in u["layers"])},
    )
    return {"logit_lens": {"recovery": table, "per_model": res}}


def build_summary(benchmark: str, probes, results: dict, config: dict, notes: list[str]) -> dict:
    base = {name: metrics_of(s) for name, s in results["baseline"].items()}
    attacks: dict[str, Any] = {}
    if "quantization" in results:
        attacks.update(_quantization(results["quantization"], base))
    if "relearning" in results:
        attacks.update(_relearning(results["relearning"]))
    if "prompts" in results:
        attacks.update(_prompts(results["prompts"], base))
    if "logit_lens" in results:
        attacks.update(_logit_lens(results["logit_lens"]))
    headline = {
        f"{name}.recovery.{metric}": row["recovery"]
        for name, a in attacks.items()
        for metric, row in a["recovery"].items()
    }
    metrics = {"baseline": base, "attacks": attacks}
    n_items = {
        "forget": len(probes.forget),
        "retain": len(probes.retain),
        "forget_units": len(probes.units()),
    }
    return make_summary(
        benchmark, headline, metrics, n_items, {"notes": list(notes)}, {"stage": "attacks", **config}
    )


def _rec_cell(row: dict) -> str:
    if row.get("recovery") is None:
        return f"undefined ({row.get('undefined')})"
    return f"{row['recovery']:.3f} (raw {row['raw']:.3f} = {row['numerator']:.4f} / {row['denominator']:.4f})"


def render_report(summary: dict) -> str:
    lines = [
        f"# Is it really forgotten? Attacks on `{summary['config'].get('model')}` ({summary['benchmark']})",
        "",
    ]
    lines += [
        "recovery = (attacked - unlearned) / (target - unlearned), clipped to [0, 1]; 1 = all that unlearning removed came back.",
        "",
    ]
    lines += [
        "| attack | metric | target | unlearned | attacked | recovery (raw = numerator / denominator) |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in summary["metrics"]["attacks"].items():
        for metric, row in a["recovery"].items():
            lines.append(
                f"| {name} | {metric} | {fmt(row['target'])} | {fmt(row['unlearned'])} | {fmt(row['attacked'])} | {_rec_cell(row)} |"
            )
    a = summary["metrics"]["attacks"]
    if "prompts" in a:
        lines += [
            "",
            "## Prompt templates (unlearned model, forget set)",
            "",
            "| template | items | ROUGE-L | prob | best for |",
            "|---|---|---|---|---|",
        ]
        for name, row in a["prompts"]["per_template"].items():
            lines.append(
                f"| {name} | {row['n']} | {fmt(row['forget_rouge'])} | {fmt(row['forget_prob'])} | {a['prompts']['wins'].get(name, 0)} |"
            )
    if "logit_lens" in a:
        lines += [
            "",
            "## Logit lens (forget set)",
            "",
            "| model | best layer | NLL best | NLL final | top-1 best | top-1 final |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in a["logit_lens"]["per_model"].items():
            if s["best"]:
                lines.append(
                    f"| {name} | {s['best_layer']} / {s['final_layer']} | {fmt(s['best']['nll'])} | {fmt(s['final']['nll'])} | {fmt(s['best']['top1'])} | {fmt(s['final']['top1'])} |"
                )
    floor = a.get("prompts", {}).get("never_trained_best")
    if floor:
        lines += [
            "",
            f"prompts, best template per item on the never-trained model (the floor): ROUGE-L {fmt(floor['forget_rouge'])}, prob {fmt(floor['forget_prob'])}",
        ]
    for key in ("open_unlearning_relearning_robustness", "gap_after_relearning"):
        if key in a.get("relearning", {}):
            vals = ", ".join(f"{k} {fmt(v)}" for k, v in a["relearning"][key].items())
            lines += ["", f"relearning {key.replace('_', ' ')}: {vals}"]
    notes = summary.get("reference", {}).get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_recovery(summary: dict, path: Path) -> Path:
    plt = figure()
    rows = [
        (f"{a}\n{m}", r["recovery"])
        for a, x in summary["metrics"]["attacks"].items()
        for m, r in x["recovery"].items()
        if m.startswith("forget")
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows)), 3.5))
    xs = range(len(rows))
    ax.bar(
        xs,
        [0 if v is None else v for _, v in rows],
        color=["#bbbbbb" if v is None else "#c0504d" for _, v in rows],
    )
    for x, (_, v) in zip(xs, rows):
        if v is None:
            ax.text(x, 0.02, "n/a", ha="center", fontsize=7)
    ax.set_xticks(list(xs), [n for n, _ in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recovery (forget metrics)")
    ax.set_title("How much of the unlearned knowledge each attack brings back")
    return save_figure(fig, path)


def write_outputs(dest: Path, summary: dict, results: dict, timing: dict, probes) -> None:
    rows = []
    for name, scored in results["baseline"].items():
        for split in ("forget", "retain"):
            src = probes.forget if split == "forget" else probes.retain
            for p, r in zip(src, scored[split]):
                rows.append(
                    {"model": name, "set": split, "unit": p.unit, "prompt": p.prompt, "answer": p.answer, **r}
                )
    if "prompts" in results:
        for p, name, r in zip(probes.forget, results["prompts"]["best_template"], results["prompts"]["best"]):
            rows.append(
                {
                    "model": "unlearned",
                    "set": "forget",
                    "attack": "prompts",
                    "template": name,
                    "unit": p.unit,
                    **r,
                }
            )
    atomic_write_jsonl(dest / "attack_items.jsonl", rows)
    atomic_write_json(dest / "attack_summary.json", summary)
    atomic_write_json(dest / "attack_timing.json", timing)
    plot_recovery(summary, dest / "plots" / "attack_recovery.png")
    atomic_write_text(dest / "report.md", render_report(summary))

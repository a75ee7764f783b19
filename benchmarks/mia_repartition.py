"""Is the gap between the graded AUC and the holdout AUC of a calibrated run the method's or the split's?

    python benchmarks/mia_repartition.py RUN_DIR [RUN_DIR ...] [--draws 2000] [--out FILE]

A RUN_DIR is one run of `benchmarks/quality_seeds.py` (`<work>/runs/<seed>-<perturb>/`: `data/mia/`, the
`holdout.jsonl`, the target under `tiny-olmo2/target` and the kept adapter under
`tiny-olmo2/default-calibrated/adapter`; a directory without an adapter measures the target). For each, the
per-document losses of the members, the grader's non-members and the holdout at the kept state, their AUCs,
and the distribution of "graded AUC - holdout AUC" when the pooled non-members are split at random into sets
of the same two sizes (:func:`repartition_gaps`, seeded): where the measured gap falls in it.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from llm_unlearn.evaluation.metrics.mia import loss_auc  # noqa: E402
from llm_unlearn.io_utils import atomic_write_json  # noqa: E402


def _half_wins(members, pool) -> list[int]:
    """For each pooled non-member loss: twice the members with a lower loss plus those with an equal one
    (the loss attack's AUC counts a member below a non-member as a win and a tie as half)."""
    ms = sorted(members)
    return [
        2 * bisect.bisect_left(ms, p) + (bisect.bisect_right(ms, p) - bisect.bisect_left(ms, p)) for p in pool
    ]


def _gap(wins_graded: int, wins_all: int, m: int, n_graded: int, n_all: int) -> float:
    """``AUC(graded) - AUC(rest)`` from the half-wins: one integer over one denominator, so equal splits
    give equal floats and an order between gaps is the exact one."""
    n_rest = n_all - n_graded
    key = wins_graded * n_rest - (wins_all - wins_graded) * n_graded
    return key / (2 * m * n_graded * n_rest)


def split_gap(members, graded, rest) -> float:
    """``loss AUC(members, graded) - loss AUC(members, rest)``, exactly as :func:`repartition_gaps` counts it."""
    w = _half_wins(members, list(graded) + list(rest))
    return _gap(sum(w[: len(graded)]), sum(w), len(members), len(graded), len(w))


def repartition_gaps(members, pool, n_graded: int, draws: int = 2000, seed: int = 0) -> list[float]:
    """Sorted ``AUC(members, S) - AUC(members, pool - S)`` over ``draws`` random subsets ``S`` of
    ``n_graded`` of the pooled non-member losses. A subset's AUC is the mean of its non-members' shares of
    wins (:func:`_half_wins`, counted once), so a draw costs a sum over S instead of two AUCs."""
    if not 0 < n_graded < len(pool):
        raise ValueError(f"n_graded must be in (0, {len(pool)}), got {n_graded}")
    if not members:
        raise ValueError("no members")
    rng = random.Random(seed)
    wins = _half_wins(members, pool)
    total = sum(wins)
    out = []
    for _ in range(draws):
        chosen = rng.sample(range(len(pool)), n_graded)
        out.append(_gap(sum(wins[i] for i in chosen), total, len(members), n_graded, len(pool)))
    return sorted(out)


def where(gaps: list[float], value: float) -> dict[str, float]:
    """The 5 %, 50 % and 95 % points of sorted ``gaps`` and the share at or below ``value``."""
    q = lambda p: gaps[min(len(gaps) - 1, int(p * len(gaps)))]  # noqa: E731
    return {
        "q05": q(0.05),
        "q50": q(0.5),
        "q95": q(0.95),
        "share_at_or_below": sum(g <= value for g in gaps) / len(gaps),
    }


def _losses(run: Path, docs: list[str]) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_unlearn.evaluation.passes.inference import document_statistics

    target = run / "tiny-olmo2" / "target"
    model = AutoModelForCausalLM.from_pretrained(target)
    adapter = run / "tiny-olmo2" / "default-calibrated" / "adapter"
    if adapter.is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        stats = document_statistics(
            model.eval(), AutoTokenizer.from_pretrained(target), docs, batch_size=16, progress=False
        )
    return [s["nll"] for s in stats]


def measure(run: Path, draws: int) -> dict:
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]  # noqa: E731
    members, graded = (
        read(run / "data" / "mia" / "member.jsonl"),
        read(run / "data" / "mia" / "nonmember.jsonl"),
    )
    holdout = read(run / "holdout.jsonl")
    nll = _losses(run, [d["document"] for d in members + graded + holdout])
    m, g, h = (
        nll[: len(members)],
        nll[len(members) : len(members) + len(graded)],
        nll[len(members) + len(graded) :],
    )
    gap = split_gap(m, g, h)  # counted as the random splits are: ties with them compare exactly
    return {
        "run": str(run),
        "auc_graded": loss_auc(m, g),
        "auc_holdout": loss_auc(m, h),
        "auc_pooled": loss_auc(m, g + h),
        "median_loss": {
            "members": statistics.median(m),
            "graded": statistics.median(g),
            "holdout": statistics.median(h),
        },
        "gap": gap,
        "repartitioned_gap": where(repartition_gaps(m, g + h, len(g), draws), gap),
        "sizes": [len(m), len(g), len(h)],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs:
        r = measure(run, args.draws)
        rows.append(r)
        rp = r["repartitioned_gap"]
        print(
            f"{run}: graded {r['auc_graded']:.3f} holdout {r['auc_holdout']:.3f} pooled {r['auc_pooled']:.3f} "
            f"gap {r['gap']:+.3f} (random splits: 5-95 % {rp['q05']:+.3f} .. {rp['q95']:+.3f}, "
            f"{100 * rp['share_at_or_below']:.0f} % at or below)",
            flush=True,
        )
    if args.out:
        atomic_write_json(args.out, {"runs": rows, "draws": args.draws})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

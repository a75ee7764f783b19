"""Known-answer tests: for each attack a tiny model built to hide the knowledge the way the attack finds
it (and, where it matters, one that does not), and the recovery formula against a brute-force reading."""

from __future__ import annotations

import pytest
from attack_models import FORGET, answer_direction, context, with_extra_layer

ANSWERS = [a for _, _, a in FORGET]


def test_recovery_formula_clips_and_shows_its_denominator():
    from llm_unlearn.attacks.recovery import quantization_robustness, recovery, relearning_robustness

    cases = [  # target, unlearned, attacked -> raw (None = undefined)
        (0.9, 0.1, 0.5, 0.5),
        (0.9, 0.1, 0.9, 1.0),
        (0.9, 0.1, 1.3, 1.5),  # clipped to 1
        (0.9, 0.1, 0.0, -0.125),  # clipped to 0
        (0.4, 0.4, 0.9, None),  # zero denominator: undefined, not NaN
        (None, 0.1, 0.2, None),
    ]
    for t, u, a, raw in cases:
        r = recovery(t, u, a)
        if raw is None:
            assert r["recovery"] is None and r["undefined"]
            continue
        assert r["denominator"] == pytest.approx(t - u, abs=1e-15)
        assert r["numerator"] == pytest.approx(a - u, abs=1e-15)
        assert r["raw"] == pytest.approx(raw, rel=1e-12)
        assert r["recovery"] == pytest.approx(min(1.0, max(0.0, raw)), rel=1e-12)
        assert r["undefined"] is None
    assert recovery(0.4, 0.4, 0.9)["denominator"] == 0.0
    assert recovery(float("nan"), 0.1, 0.2)["recovery"] is None
    assert relearning_robustness(0.1, 0.5, 0.1, 0.3) == pytest.approx(0.5)
    assert relearning_robustness(0.1, 0.5, 0.1, 0.9) == 1.0
    assert relearning_robustness(0.5, 0.4, 0.1, 0.3) == 1.0
    assert relearning_robustness(0.1, None, 0.1, 0.3) is None
    assert quantization_robustness(0.2, 0.8) == pytest.approx(0.25)
    assert quantization_robustness(0.2, 0.1) == 1.0


def _penalized(memorized, tok, delta, outlier, strength=200.0):
    u = answer_direction(memorized, tok, ANSWERS)
    return with_extra_layer(memorized, u, delta=delta, outlier=outlier, strength=strength)


def test_logit_lens_catches_a_last_layer_penalty(attack_tok, memorized):
    """The "unlearning" is one appended layer that pushes the answer tokens down just before the output:
    the final layer forgets, the layer below it still gives the target's answers exactly."""
    from llm_unlearn.attacks.logit_lens import run_logit_lens
    from llm_unlearn.attacks.summary import _logit_lens

    target = with_extra_layer(memorized)  # the same extra layer, adding nothing
    unlearned = _penalized(memorized, attack_tok, delta=1.0, outlier=0.0)
    res = run_logit_lens(context(attack_tok, target, unlearned))
    t, u = res["target"], res["unlearned"]
    n = len(memorized.model.layers)
    assert u["final"]["nll"] > t["final"]["nll"] + 3.0  # the penalty works at the output
    assert u["best_layer"] == n  # the original last layer, below the penalty
    # below the penalty both models compute the same thing: equal up to float32 summation order
    assert u["layers"][n - 1]["nll"] == pytest.approx(t["final"]["nll"], rel=1e-4, abs=1e-5)
    assert u["best"]["top1"] >= 0.9 and u["final"]["top1"] <= 0.1
    rec = _logit_lens(res)["logit_lens"]["recovery"]["forget_prob"]
    assert rec["recovery"] == pytest.approx(1.0, abs=1e-3)


def test_prefix_injection_catches_a_refusal(attack_tok, refusal_model):
    """A model that only learned to refuse before answering: plain prompts give the refusal, the
    injected answer prefix gives the answers back."""
    from llm_unlearn.attacks.prompts import run_prompts

    ctx = context(attack_tok, refusal_model, refusal_model)
    res = run_prompts(ctx)
    plain, injected = res["per_template"]["plain"], res["per_template"]["prefix_injection"]
    assert plain["forget_rouge"] < 0.3
    assert injected["forget_rouge"] > 0.8
    assert res["wins"].get("prefix_injection", 0) >= len(FORGET) - 1
    best = sum(r["rouge"] for r in res["best"]) / len(res["best"])
    assert best >= injected["forget_rouge"]  # the best template per item is at least any one template


def _snapped(model, scheme):
    """``model`` with every quantized linear weight replaced by its round trip: quantizing it again
    changes nothing (NF4 / int8 are idempotent: each block's absmax maps to the code ±1)."""
    from llm_unlearn.attacks.quantization import quantize_model

    return quantize_model(model, scheme)


SCHEMES = [
    pytest.param(
        "nf4",
        marks=pytest.mark.skipif(
            not __import__("importlib").util.find_spec("bitsandbytes"),
            reason="bitsandbytes not installed (the quant extra)",
        ),
    ),
    "int8",
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantization_undoes_a_delta_below_the_step_and_not_one_above(attack_tok, memorized, scheme):
    """Target: the memorized model on the quantization grid plus an identity layer whose blocks hold
    inert outliers of 100 (so their rounding step is >= 100 x 0.08 for NF4, 100 / 127 for int8).
    Unlearned A: a delta of at most 1e-3 in that layer (far below the step) that suppresses the answers;
    quantization rounds it to 0: full recovery. Unlearned B: the same suppression without outliers (the
    delta is its block's absmax, far above the step): quantization keeps it: no recovery."""
    from llm_unlearn.attacks.quantization import run_quantization
    from llm_unlearn.attacks.summary import _quantization, metrics_of

    base = _snapped(memorized, scheme)
    u = answer_direction(base, attack_tok, ANSWERS)
    target = with_extra_layer(base, outlier=100.0)
    below = with_extra_layer(base, u, delta=1e-3, outlier=100.0, strength=200.0)
    above = with_extra_layer(base, u, delta=1.0, outlier=0.0, strength=200.0)
    for unlearned, expected in ((below, 1.0), (above, 0.0)):
        ctx = context(attack_tok, target, unlearned)
        base_metrics = {n: metrics_of(ctx.score_all(n, m, n)) for n, m in ctx.models()}
        assert base_metrics["unlearned"]["forget_prob"] < 0.5 * base_metrics["target"]["forget_prob"]
        res = _quantization(run_quantization(ctx, [scheme]), base_metrics)[f"quantization_{scheme}"]
        rec = res["recovery"]["forget_prob"]
        assert rec["recovery"] == pytest.approx(expected, abs=0.02), rec


def test_relearning_recovers_more_on_a_suppressed_model_than_on_a_never_trained_one(
    attack_tok, memorized, refusal_model, never_trained
):
    from llm_unlearn.attacks.relearning import RelearnSettings, run_relearning
    from llm_unlearn.attacks.summary import _relearning

    """Relearning (LoRA, 20 steps) on 2 of the 4 forget units of a model that only learned to refuse
    brings the other 2 units' answers back; on a model that never saw them it does not."""
    ctx = context(attack_tok, memorized, refusal_model, never_trained)
    s = RelearnSettings(steps=20, fraction=0.5, lr=3e-3, method="lora", batch_size=4, seed=0)
    res = run_relearning(ctx, s)
    assert set(res["relearn_units"]).isdisjoint(res["heldout_units"])
    assert len(res["relearn_units"]) == 2 and len(res["heldout_units"]) == 2
    entry = _relearning(res)["relearning"]
    after = entry["recovery"]["forget_rouge"]["attacked"]
    never_after = entry["never_trained"]["after"]["forget_rouge"]
    assert after > never_after + 0.3, (after, never_after)
    assert entry["recovery"]["forget_rouge"]["recovery"] > 0.3
    rob = entry["open_unlearning_relearning_robustness"]["forget_rouge"]
    assert rob is not None and rob < 0.5  # the unlearned model gains more than the never-trained one

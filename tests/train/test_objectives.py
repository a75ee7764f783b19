"""Every registered objective against an independent computation.

The independent side runs the model the textbook way: full [B, T, V] logits of the model and of the
reference (the adapter switched off), the causal shift, padded masks, and each method's formula
written out here (Python loops or plain tensor expressions) -- not through train/methods/,
train/loss.py, the answer-only head or the per-row reductions the production path uses.

Tolerance: the model runs in float64, so both sides are float64 computations of the same quantities
in a different reduction order. With at most a few hundred terms per reduction and |values| < 1e3, the
difference is below n * u * |value| ~ 1e3 * 1.1e-16 * 1e3 ~ 1e-10: rel 1e-9, abs 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import collate_rows, make_lora_model, make_rows
from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.train.head import AnswerHeadSelector
from llm_unlearn.train.loss import unlearning_loss
from llm_unlearn.train.methods import OBJECTIVES

TOL = {"rel": 1e-9, "abs": 1e-10}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world64(tiny_world):
    pm = make_lora_model(tiny_world, dtype=torch.float64)
    batch = collate_rows(tiny_world, make_rows(tiny_world, 3, 3, alternatives=True))
    return pm, batch, brute(pm, batch)


def brute(pm, batch, layer=None):
    """Full-logits quantities: per position (shifted) log p, masks, logits of model and reference."""
    ids, att = batch["input_ids"], batch["attention_mask"]
    out = pm(input_ids=ids, attention_mask=att, output_hidden_states=True)
    with torch.no_grad(), pm.disable_adapter():
        ref = pm(input_ids=ids, attention_mask=att, output_hidden_states=True)
    lab = batch["labels"][:, 1:]
    valid = lab.ne(-100)
    safe = lab.clamp_min(0)
    z, rz = out.logits[:, :-1], ref.logits[:, :-1]
    lp = z.log_softmax(-1).gather(-1, safe[..., None])[..., 0]
    rlp = rz.log_softmax(-1).gather(-1, safe[..., None])[..., 0]
    f = batch["is_forget"][:, None]
    return {
        "z": z, "rz": rz, "lp": lp, "rlp": rlp, "valid": valid, "safe": safe,
        "fmask": valid & f, "rmask": valid & ~f, "hidden": out.hidden_states, "ref_hidden": ref.hidden_states,
    }  # fmt: skip


def run(pm, batch, epoch=0.0, state=None, **opts):
    obj = ObjectiveOptions(**opts)
    sel = AnswerHeadSelector(pm)
    try:
        state = {} if state is None else state
        total, terms = unlearning_loss(pm, batch, obj, sel, state=state, epoch=epoch)
    finally:
        sel.remove()
    return total, terms, state


def forget_rows(b, batch):
    """[(row index, [log p of its answer tokens], [reference log p])] of the forget rows."""
    out = []
    for i in range(batch["labels"].shape[0]):
        if bool(batch["is_forget"][i]):
            m = b["fmask"][i]
            out.append((i, b["lp"][i][m].tolist(), b["rlp"][i][m].tolist()))
    return out


def test_every_registered_objective_is_tested_here():
    tested = {n[len("test_objective_") :] for n in globals() if n.startswith("test_objective_")}
    assert set(OBJECTIVES) <= tested, f"objectives without an independent test: {set(OBJECTIVES) - tested}"


def test_objective_npo_rt_div(world64):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, npo_beta=0.5, renyi_alpha=0.5)
    beta, alpha = 0.5, 0.5
    fl = [(x, r) for _, xs, rs in forget_rows(b, batch) for x, r in zip(xs, rs)]
    npo = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * (r - x)))) for x, r in fl) / len(fl)
    assert t["npo"] == pytest.approx(npo, **TOL)
    assert t["retain_nll"] == pytest.approx(float(-b["lp"][b["rmask"]].mean()), **TOL)
    P, Q = b["z"][b["rmask"]].log_softmax(-1), b["rz"][b["rmask"]].log_softmax(-1)
    div = (torch.logsumexp(alpha * P + (1 - alpha) * Q, -1) / (alpha - 1)).mean()
    assert t["divergence"] == pytest.approx(float(div), **TOL)


def test_objective_npo(world64):
    pm, batch, b = world64
    total, t, _ = run(pm, batch, method="npo", npo_beta=0.1, npo_level="sequence", divergence_weight=0.0)
    beta, vals = 0.1, []
    for _, xs, rs in forget_rows(b, batch):
        vals.append(math.log(1 / (1 + math.exp(-beta * (sum(rs) - sum(xs))))))
    npo = -(2 / beta) * sum(vals) / len(vals)
    nll = float(-b["lp"][b["rmask"]].mean())
    assert t == {"npo": pytest.approx(npo, **TOL), "retain_nll": pytest.approx(nll, **TOL)}
    assert float(total) == pytest.approx(npo + nll, **TOL)  # gamma = alpha = 1 (open-unlearning NPO.yaml)


def test_objective_gradient_ascent(world64):
    pm, batch, b = world64
    total, t, _ = run(pm, batch, method="gradient_ascent", forget_weight=0.7)
    nll = float(-b["lp"][b["fmask"]].mean())
    assert t["forget_nll"] == pytest.approx(nll, **TOL)
    assert float(total) == pytest.approx(-0.7 * nll, **TOL)


def test_objective_gradient_difference(world64):
    pm, batch, b = world64
    total, t, _ = run(pm, batch, method="gradient_difference", forget_weight=1.0, retain_weight=2.0)
    f, r = float(-b["lp"][b["fmask"]].mean()), float(-b["lp"][b["rmask"]].mean())
    assert (t["forget_nll"], t["retain_nll"]) == (pytest.approx(f, **TOL), pytest.approx(r, **TOL))
    assert float(total) == pytest.approx(-f + 2.0 * r, **TOL)


def test_objective_sugd(world64):
    pm, batch, b = world64
    total, t, _ = run(pm, batch, method="sugd", sugd_forget_factor=-1.0, sugd_retain_factor=0.5)
    B, acc = batch["labels"].shape[0], 0.0
    for i in range(B):
        m = b["valid"][i]
        row_nll = -sum(b["lp"][i][m].tolist()) / max(int(m.sum()), 1)
        acc += (-1.0 if bool(batch["is_forget"][i]) else 0.5) * row_nll
    assert t["sugd"] == pytest.approx(acc / B, **TOL)
    assert float(total) == pytest.approx(acc / B, **TOL)
    assert t["forget_nll"] == pytest.approx(float(-b["lp"][b["fmask"]].mean()), **TOL)  # logged only


def test_objective_simnpo(world64):
    pm, batch, b = world64
    _, t, _ = run(
        pm,
        batch,
        method="simnpo",
        simnpo_beta=4.5,
        simnpo_delta=0.3,
        retain_weight=1.0,
        divergence_weight=0.0,
    )
    beta, delta, vals = 4.5, 0.3, []
    for _, xs, _ in forget_rows(b, batch):
        u = beta * (-sum(xs) / len(xs) - delta)
        vals.append(math.log(1 / (1 + math.exp(-u))))
    assert t["simnpo"] == pytest.approx(-(2 / beta) * sum(vals) / len(vals), **TOL)
    assert t["retain_nll"] == pytest.approx(float(-b["lp"][b["rmask"]].mean()), **TOL)
    assert "divergence" not in t


def _alt_sums(pm, batch, rows):
    ids, att, lab = (batch[k][rows] for k in ("alt_input_ids", "alt_attention_mask", "alt_labels"))
    out = []
    for ctx in (torch.enable_grad, pm.disable_adapter):
        with ctx():
            z = pm(input_ids=ids, attention_mask=att).logits[:, :-1]
        nxt = lab[:, 1:]
        lp = z.log_softmax(-1).gather(-1, nxt.clamp_min(0)[..., None])[..., 0]
        out.append([float(lp[i][nxt[i].ne(-100)].sum()) for i in range(len(rows))])
    return out


@pytest.mark.parametrize("method", ["idk_dpo", "altpo"])
def test_objective_idk_dpo(world64, method):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, method=method, dpo_beta=0.1, divergence_weight=0.0)
    rows = forget_rows(b, batch)
    win, win_ref = _alt_sums(pm, batch, [i for i, _, _ in rows])
    beta, vals = 0.1, []
    for (_, xs, rs), w, wr in zip(rows, win, win_ref):
        margin = beta * ((w - wr) - (sum(xs) - sum(rs)))
        vals.append(math.log(1 / (1 + math.exp(-margin))))
    assert t["dpo"] == pytest.approx(-(2 / beta) * sum(vals) / len(vals), **TOL)
    # both log-ratios are logged (never in the total): mean over the forget rows
    lose = [sum(xs) - sum(rs) for _, xs, rs in rows]
    assert t["dpo_forget_logratio"] == pytest.approx(sum(lose) / len(lose), **TOL)
    assert t["dpo_alt_logratio"] == pytest.approx(
        sum(w - wr for w, wr in zip(win, win_ref)) / len(win), **TOL
    )
    total, _, _ = run(pm, batch, method=method, dpo_beta=0.1, divergence_weight=0.0)
    assert float(total) == pytest.approx(t["dpo"] + t["retain_nll"], **TOL)


test_objective_altpo = test_objective_idk_dpo  # the same loss; only where the alternatives come from differs


def _token_weighted(b, weight_fn):
    vals = [weight_fn(math.exp(x)) * x for x in b["lp"][b["fmask"]].tolist()]
    return sum(vals) / len(vals)


def test_objective_wga(world64):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, method="wga", wga_beta=1.5, divergence_weight=0.0)
    assert t["wga"] == pytest.approx(_token_weighted(b, lambda p: p**1.5), **TOL)


def test_objective_satimp(world64):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, method="satimp", satimp_beta1=5.0, satimp_beta2=1.0, divergence_weight=0.0)
    assert t["satimp"] == pytest.approx(_token_weighted(b, lambda p: p**5 * (1 - p)), **TOL)


def test_objective_undial(world64):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, method="undial", undial_strength=10.0, retain_weight=0.0, divergence_weight=0.0)
    m = b["fmask"]
    y = b["safe"][m]
    adjusted = b["rz"][m].clone()
    adjusted[torch.arange(len(y)), y] -= 10.0
    q = adjusted.softmax(-1)
    expected = -(q * b["z"][m].log_softmax(-1)).sum(-1).mean()
    assert t["undial"] == pytest.approx(float(expected), **TOL)


def test_objective_ce_u(world64):
    pm, batch, b = world64
    _, t, _ = run(pm, batch, method="ce_u", retain_weight=0.0, divergence_weight=0.0)
    vals = []
    for i, _, _ in forget_rows(b, batch):
        cols = b["fmask"][i].nonzero().flatten().tolist()[1:]  # the first answer token is not trained
        for c in cols:
            z = b["z"][i, c]
            masked = z.detach().clone()
            masked[b["safe"][i, c]] = -math.inf
            vals.append(float(-(masked.softmax(-1) * z.log_softmax(-1)).sum()))
    assert t["ce_u"] == pytest.approx(sum(vals) / len(vals), **TOL)


def test_objective_rmu(world64):
    pm, batch, b = world64
    layer = 0  # the tiny model has 2 layers: the default picks (2 - 1) // 2
    _, t, state = run(pm, batch, method="rmu", rmu_steering=20.0, retain_weight=1.0)
    h, h0 = b["hidden"][layer + 1], b["ref_hidden"][layer + 1]  # hidden_states[0] is the embedding
    control = torch.tensor(state["rmu_control"], dtype=torch.float64)
    assert float(control.norm()) == pytest.approx(20.0, rel=1e-6)
    lab = batch["labels"]

    def mean_rows(target_of, rows):
        per_row = []
        for i in rows:
            cols = lab[i].ne(-100).nonzero().flatten().tolist()
            per_row.append(sum(float(((h[i, c] - target_of(i, c)) ** 2).mean()) for c in cols) / len(cols))
        return sum(per_row) / len(per_row)

    forget = [i for i in range(lab.shape[0]) if bool(batch["is_forget"][i])]
    retain = [i for i in range(lab.shape[0]) if not bool(batch["is_forget"][i])]
    assert t["rmu_forget"] == pytest.approx(mean_rows(lambda i, c: control, forget), **TOL)
    assert t["rmu_retain"] == pytest.approx(mean_rows(lambda i, c: h0[i, c], retain), **TOL)


def test_objective_pdu(world64):
    pm, batch, b = world64
    total, t, state = run(
        pm,
        batch,
        method="pdu",
        retain_weight=2.0,
        divergence_weight=0.0,
        pdu_dual_step=1.0,
        pdu_retain_eps=0.1,
        pdu_dual_warmup_epochs=0.0,
    )
    zf = b["z"][b["fmask"]]
    forget = ((zf.max(-1).values - zf.mean(-1)) ** 2).mean()
    nll = float(-b["lp"][b["rmask"]].mean())
    assert t["pdu_forget"] == pytest.approx(float(forget), **TOL)
    assert t["pdu_dual"] == 2.0  # the multiplier this step used: the initial one, alpha
    assert float(total) == pytest.approx(float(forget) + 2.0 * nll, **TOL)
    assert state["pdu_dual"] == pytest.approx(max(0.0, 2.0 + 1.0 * (nll - 0.1)), **TOL)  # projected ascent


def test_pdu_dual_is_held_during_the_warmup(world64):
    """open-unlearning PDU.yaml dual_warmup_epochs 5: no update in epochs 0..4 (state.epoch < 5), every
    step from the one that starts epoch 5 (state.epoch == 5.0) on; eps is still fixed at the first step."""
    pm, batch, b = world64
    opts = dict(method="pdu", retain_weight=2.0, divergence_weight=0.0, pdu_dual_step=1.0)
    assert ObjectiveOptions().pdu_dual_warmup_epochs == 5.0  # the default is open-unlearning's
    nll = float(-b["lp"][b["rmask"]].mean())
    state: dict = {}
    for epoch in (0.0, 2.5, 4.99):
        _, t, state = run(pm, batch, epoch=epoch, state=state, pdu_retain_eps=0.1, **opts)
        assert t["pdu_dual"] == 2.0 and state["pdu_dual"] == 2.0
    _, t, state = run(pm, batch, epoch=5.0, state=state, pdu_retain_eps=0.1, **opts)
    assert t["pdu_dual"] == 2.0  # this step used the held multiplier, and updated it after
    assert state["pdu_dual"] == pytest.approx(2.0 + (nll - 0.1), **TOL)
    _, t, state = run(pm, batch, epoch=5.2, state=state, pdu_retain_eps=0.1, **opts)
    assert t["pdu_dual"] == pytest.approx(2.0 + (nll - 0.1), **TOL)
    assert state["pdu_dual"] == pytest.approx(2.0 + 2 * (nll - 0.1), **TOL)
    # without a given eps, the first step's retain NLL fixes it, warm-up or not
    _, _, st2 = run(pm, batch, epoch=0.0, state={}, **opts)
    assert st2["pdu_eps"] == pytest.approx(nll, **TOL) and st2["pdu_dual"] == 2.0


@pytest.mark.parametrize("method", sorted(OBJECTIVES))
def test_one_gradient_step_lowers_the_objective(tiny_world, method):
    """First order: a small step against the gradient lowers the objective's total (same batch, SGD)."""
    pm = make_lora_model(tiny_world, dtype=torch.float64)
    batch = collate_rows(tiny_world, make_rows(tiny_world, 3, 3, alternatives=True))
    opts = {"divergence_weight": 0.0} if method not in ("npo_rt_div",) else {}
    total, _, _ = run(pm, batch, method=method, **opts)
    params = [p for p in pm.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    norm2 = sum(float((g**2).sum()) for g in grads if g is not None)
    assert norm2 > 0, "the objective has no gradient on the adapter"
    lr = 1e-3 / math.sqrt(norm2)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p -= lr * g
    after, _, _ = run(pm, batch, method=method, **opts)
    # decrease ~ lr * |g|^2 = 1e-3 |g|; second-order terms are O(lr^2): far smaller at this step
    assert float(after) < float(total)


def test_terms_absent_rows_are_exactly_zero(world64):
    """A batch of retain rows only: no forget term at all, for every objective."""
    pm, batch, _ = world64
    keep = (~batch["is_forget"]).nonzero().flatten()
    retain_only = {k: v[keep] for k, v in batch.items()}
    for method in OBJECTIVES:
        opts = {} if method == "npo_rt_div" else {"divergence_weight": 0.0}
        _, t, _ = run(pm, retain_only, method=method, **opts)
        whole_batch = {"retain_nll", "divergence", "rmu_retain", "pdu_dual", "sugd"}  # sugd: every row
        forget_terms = set(OBJECTIVES[method].terms) - whole_batch
        assert not (forget_terms & set(t)), (method, t)

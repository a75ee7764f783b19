"""calibration.bisect: when an evaluation finds the MIA AUC jumped from above the band (> 0.5 + tolerance)
to below it (< 0.5 - tolerance), the states on the straight line between the two adapter weights are
evaluated by bisection and join the candidates; the training itself goes on from where it was."""

from __future__ import annotations

import json

import pytest
import torch
from test_calibrated_run import _run, _stop_mode

from llm_unlearn.config import build_config
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.bisect import interpolate_state
from llm_unlearn.train.calibrated import Calibrator

TOL = 0.05


@pytest.mark.parametrize(
    ("upper", "auc", "expected"),
    [
        (0.70, 0.30, True),
        (0.551, 0.449, True),
        (0.55, 0.30, False),  # the upper end is inside the band (|0.55 - 0.5| <= tol): no jump over it
        (0.70, 0.45, False),  # the lower end is inside the band
        (0.70, 0.60, False),  # still above: no crossing
        (0.40, 0.30, False),  # both below
        (None, 0.30, False),
        (0.70, None, False),
        (0.70, float("nan"), False),
    ],
)
def test_crossed_means_a_jump_over_the_whole_band(upper, auc, expected):
    assert cal.crossed(upper, auc, tolerance=TOL) is expected


@pytest.mark.parametrize(
    ("auc", "meets", "expected"),
    [
        (0.70, True, (0.5, 1.0)),  # t = 0.5 still above the band: the crossing is later on the line
        (0.30, True, (0.0, 0.5)),  # below: earlier
        (0.52, True, None),  # within the band, floors met: found
        (0.48, True, None),
        (0.52, False, (0.0, 0.5)),  # within the band but a floor is broken: towards the less unlearned end
        (None, True, None),  # no AUC to steer by: stop
    ],
)
def test_bisect_step_halves_the_bracket_towards_the_crossing(auc, meets, expected):
    assert cal.bisect_step(0.0, 1.0, auc, tolerance=TOL, meets_floors=meets) == expected


def test_bisect_step_on_an_inner_bracket():
    assert cal.bisect_step(0.5, 1.0, 0.3, tolerance=TOL, meets_floors=True) == (0.5, 0.75)
    assert cal.bisect_step(0.5, 1.0, 0.6, tolerance=TOL, meets_floors=True) == (0.75, 1.0)


def test_interpolate_state_is_exact_at_both_ends_and_linear_between():
    a = {"w": torch.tensor([0.0, 2.0, -1.0]), "b": torch.tensor([[1.0]])}
    b = {"w": torch.tensor([4.0, 2.0, 3.0]), "b": torch.tensor([[-3.0]])}
    assert all(torch.equal(interpolate_state(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(interpolate_state(a, b, 1.0)[k], b[k]) for k in a)
    mid = interpolate_state(a, b, 0.25)
    assert torch.equal(mid["w"], torch.tensor([1.0, 2.0, 0.0]))
    assert torch.equal(mid["b"], torch.tensor([[0.0]]))


class _LineMonitor:
    """A monitor whose MIA AUC is a known function of the one weight: AUC = 1 - 0.2 w (the crossing of 0.5
    at w = 2.5), retain perfect, forget EM 0; it also changes state a real monitor keeps (answered,
    pull_caps), which an evaluation of a state off the training path must leave as it was."""

    def __init__(self):
        self.calls = []
        self.answered = {0}
        self.pull_caps = {0: 1.0}

    def evaluate(self, model, *, step, chunk, measured=None):
        w = float(model.w.detach())
        self.calls.append(w)
        self.answered = {int(w * 1000)}
        self.pull_caps = {0: w}
        auc = 1.0 - 0.2 * w
        row = {"step": step, "chunk": chunk, "mia_auc": auc, "forget_em": 0.0 if w else 1.0}
        row.update(retain_em=1.0, retain_rougeL=1.0, task_aggregate=1.0 if w else 0.0)
        row["proxy"] = cal.proxy_score(row["task_aggregate"], auc, None)
        row["_active"], row["_caps"] = {0: w < 2.5}, {0: w}
        return row


class _One(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.0))


def _calibrator(bisect: int) -> tuple[Calibrator, _LineMonitor, _One]:
    cfg = build_config(
        overrides={"calibration.bisect": bisect, "calibration.mode": "gate", "calibration.tolerance": TOL}
    )
    mon = _LineMonitor()
    return Calibrator(cfg, mon, [10, 10], "chunk"), mon, _One()


def _at(model, w):
    with torch.no_grad():
        model.w.fill_(w)


def test_a_jump_over_the_band_is_bisected_and_the_training_state_left_as_it_was():
    calib, mon, model = _calibrator(4)
    for w in (0.0, 1.0):  # AUC 1.0, 0.8
        _at(model, w)
        calib.evaluate(model, step=int(w * 10), chunk=0)
    _at(model, 4.0)  # AUC 0.2: jumped from 0.8 past the band [0.45, 0.55]
    action = calib.evaluate(model, step=40, chunk=0)
    assert action is None  # not the last chunk: the run trains on
    # the line from w = 1 to w = 4: t = 0.5 -> w 2.5 -> AUC 0.5, in the band: found at once
    assert mon.calls == [0.0, 1.0, 4.0, 2.5]
    evs = calib.evaluations
    assert [e["mia_auc"] for e in evs] == pytest.approx([1.0, 0.8, 0.5, 0.2])
    assert evs[2]["bisect"] == {"t": 0.5, "from_evaluation": 2, "from_step": 10, "to_step": 40}
    assert "bisect" not in evs[3] and evs[-1]["step"] == 40  # the current state stays the latest row
    assert float(model.w.detach()) == 4.0  # training goes on from where it was
    assert mon.answered == {4000} and mon.pull_caps == {0: 4.0}  # the monitor's state is the current one
    assert calib.active == {0: False} and calib.caps == {0: 4.0}  # the gate of the current state
    assert calib.best_index == 2 and float(calib.best_state["w"]) == 2.5  # the bisected state is the best
    idx, _ = cal.select_best(evs, **calib.floors)
    assert idx == 2
    calib.finish(model)
    assert float(model.w.detach()) == 2.5  # and is what the run keeps


@pytest.mark.parametrize("n", [2, 3, 5])
def test_bisection_narrows_down_in_at_most_the_given_number_of_evaluations(n):
    calib, mon, model = _calibrator(n)
    for w in (0.0, 2.0):  # AUC 1.0, 0.6 (above the band)
        _at(model, w)
        calib.evaluate(model, step=int(w), chunk=1)
    _at(model, 6.0)  # AUC -0.2; the line from w 2 to 6 crosses 0.5 at w 2.5 (t = 1/8)
    calib.evaluate(model, step=6, chunk=1)
    # t = 1/2 (w 4, AUC 0.2), 1/4 (w 3, AUC 0.4), 1/8 (w 2.5, AUC 0.5: within the band, found)
    ts = [0.5, 0.25, 0.125][:n]
    assert mon.calls[3:] == pytest.approx([2.0 + 4.0 * t for t in ts])
    assert [e.get("bisect", {}).get("t") for e in calib.evaluations] == [None, None, *ts, None]
    assert calib.bisections[0]["tried"] == [
        {"t": t, "mia_auc": pytest.approx(1.0 - 0.2 * (2.0 + 4.0 * t))} for t in ts
    ]


def test_no_bisection_when_off_or_without_a_jump():
    calib, mon, model = _calibrator(0)
    for w in (0.0, 1.0, 4.0):
        _at(model, w)
        calib.evaluate(model, step=int(w), chunk=0)
    assert mon.calls == [0.0, 1.0, 4.0]
    calib, mon, model = _calibrator(3)
    for w in (0.0, 2.4, 4.0):  # 1.0, 0.52 (inside the band, a calibrated candidate), 0.2: nothing to search
        _at(model, w)
        calib.evaluate(model, step=int(w), chunk=0)
    assert mon.calls == pytest.approx([0.0, 2.4, 4.0])  # float32 weights


def test_one_bisection_per_bracket():
    calib, mon, model = _calibrator(1)
    for w in (0.0, 1.0, 4.0, 5.0):  # the second overshoot has no new state above the band before it
        _at(model, w)
        calib.evaluate(model, step=int(w), chunk=0)
    assert mon.calls == [0.0, 1.0, 4.0, 2.5, 5.0]


def test_a_real_run_bisects_without_changing_its_training_path(one_torch_thread, tiny_world, tmp_path):
    """NPO without the gate at a large learning rate jumps past unseen; with bisection the run's own
    evaluations (the training path) are exactly those without, and only candidates are added."""
    # NPO without the gate ends far below 0.5 (the overshoot stop); with sparse evaluations and a band
    # that holds only AUC = 0.5 itself (steps of 1/36), the way there jumps over it unless an evaluation
    # lands on 0.5 exactly
    base = _stop_mode(
        tiny_world,
        tmp_path,
        **{
            "train.learning_rate": 1e-2,
            "schedule.chunk_size": 15,
            "calibration.eval_every": 12,
            "calibration.tolerance": 0.01,
        },
    )
    plain = _run(tiny_world, tmp_path / "plain", **base)["calibration"]
    got = _run(tiny_world, tmp_path / "bisect", **base, **{"calibration.bisect": 3})["calibration"]
    own = [e for e in got["evaluations"] if "bisect" not in e]
    extra = [e for e in got["evaluations"] if "bisect" in e]
    key = ("step", "mia_auc", "forget_em", "retain_em", "proxy")
    assert [[e[k] for k in key] for e in own] == [[e[k] for k in key] for e in plain["evaluations"]]
    assert got["stop_reason"] == plain["stop_reason"]
    assert extra, "the run jumped past the band (the test's premise): it must have been bisected"
    for e in extra:
        assert 0.0 < e["bisect"]["t"] < 1.0
        assert e["bisect"]["from_step"] < e["bisect"]["to_step"] == e["step"]
    run = json.loads((tmp_path / "bisect" / "run.json").read_text())
    assert run["calibration"]["bisections"] == got["bisections"] and got["bisections"]


def test_one_copy_of_the_weights_per_evaluation(monkeypatch):
    """An evaluation that is at once the best so far, the bisection's upper end and the backtrack's anchor
    keeps the three as one copy of the trainable weights (a copy gathers the whole adapter under FSDP), and
    the kept state is still that evaluation's, not the weights trained after it."""
    import llm_unlearn.train.calibrated as calibrated

    copies = []
    real = calibrated.trainable_state

    def counting(model):
        copies.append(1)
        return real(model)

    monkeypatch.setattr(calibrated, "trainable_state", counting)
    cfg = build_config(
        overrides={
            "calibration.bisect": 4,
            "calibration.backtrack": 2,
            "calibration.mode": "gate",
            "calibration.tolerance": TOL,
        }
    )
    calib, model = Calibrator(cfg, _LineMonitor(), [10, 10], "chunk"), _One()
    calib.evaluate(model, step=0, chunk=0)  # w 0: AUC 1, forget EM 1 (not an anchor: floors unmet)
    copies.clear()
    _at(model, 1.0)  # AUC 0.8: best so far, above the band with the floors met, an anchor
    calib.evaluate(model, step=10, chunk=0)
    assert calib.best_index == 1 and calib.upper[0] == 1 and calib.anchor[0] == 1
    assert len(copies) == 1
    _at(model, 1.5)  # the live weights move on; the kept ones do not
    assert float(calib.best_state["w"]) == 1.0
    assert float(calib.upper[1]["w"]) == 1.0 and float(calib.anchor[1]["w"]) == 1.0

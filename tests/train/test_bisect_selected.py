"""calibration.bisect_selected: when the state the selection would keep has its MIA AUC outside the band
(|AUC - 0.5| > tolerance), the straight lines between its adapter weights and those of its nearest
evaluations on the other side of the band's edge (the latest before it, then the first after it) are
searched by bisection at the run's end, at most n states on each; the states tried are candidates like
any evaluation."""

from __future__ import annotations

import pytest
import torch
from test_bisect import _LineMonitor, _One

from llm_unlearn.config import GATED_DEFAULTS, build_config
from llm_unlearn.train import calibration as cal
from llm_unlearn.train.calibrated import Calibrator

TOL = 0.05


class _Monitor(_LineMonitor):
    """test_bisect's line (AUC = 1 - 0.2 w, 0.5 at w = 2.5; forget EM 1 at w = 0, else 0), with retain EM
    0.5 (below the 0.9 floor) at the weights listed in ``bad``."""

    def __init__(self, bad=()):
        super().__init__()
        self.bad = {float(b) for b in bad}

    def evaluate(self, model, *, step, chunk, measured=None):
        row = super().evaluate(model, step=step, chunk=chunk, measured=measured)
        w = float(model.w.detach())
        if any(abs(w - b) < 1e-6 for b in self.bad):
            row["retain_em"] = 0.5
        return row


def _calibrator(n: int, bad=(), bisect: int = 0):
    cfg = build_config(
        overrides={
            "calibration.bisect_selected": n,
            "calibration.bisect": bisect,
            "calibration.mode": "gate",
            "calibration.tolerance": TOL,
            "calibration.retain_floor": 0.9,
        }
    )
    mon = _Monitor(bad)
    # chunk 0 of two: no calibrated stop, the run trains on past every evaluation
    return Calibrator(cfg, mon, [10, 10], "chunk"), mon, _One()


def _path(calib, model, ws):
    for i, w in enumerate(ws):
        with torch.no_grad():
            model.w.fill_(w)
        calib.evaluate(model, step=10 * i, chunk=0)


@pytest.mark.parametrize(
    ("auc", "side"),
    [(0.2, -1), (0.449, -1), (0.45, 0), (0.5, 0), (0.55, 0), (0.551, 1), (0.9, 1), (None, None)],
)
def test_band_side(auc, side):
    assert cal.band_side(auc, tolerance=TOL) == side
    assert cal.band_side(float("nan"), tolerance=TOL) is None


def test_a_kept_state_below_the_band_is_bisected_towards_the_state_before_it():
    # w 2.4: AUC 0.52, inside the band but below the retain floor; w 4: AUC 0.2, meets the floors: kept
    calib, mon, model = _calibrator(3, bad=[2.4])
    _path(calib, model, [0.0, 2.4, 4.0])
    assert calib.best_index == 2
    with torch.no_grad():
        model.w.fill_(4.5)  # the last training state, after the kept one
    out = calib.finish(model)
    # the line from w 2.4 (t = 0) to w 4 (t = 1): t 1/2 -> w 3.2 (AUC 0.36, below), 1/4 -> w 2.8 (0.44),
    # 1/8 -> w 2.6 (AUC 0.48: in the band, floors met: found)
    assert mon.calls[3:] == pytest.approx([3.2, 2.8, 2.6])
    evs = out["evaluations"]
    assert [e.get("bisect", {}).get("t") for e in evs[3:]] == [0.5, 0.25, 0.125]
    assert evs[-1]["bisect"]["from_step"] == 10 and evs[-1]["bisect"]["to_step"] == 20
    assert out["selected_index"] == 5 and "bisected" in out["selection_reason"]
    assert float(model.w.detach()) == pytest.approx(2.6)  # the run keeps the bisected state
    assert mon.answered == {4000} and mon.pull_caps == {0: 4.0}  # the monitor's state is put back
    assert out["bisections"][-1]["why"] == "kept state outside the band"
    assert [x["t"] for x in out["bisections"][-1]["tried"]] == [0.5, 0.25, 0.125]


def test_then_towards_the_first_state_after_it():
    # w 4 (AUC 0.2) kept; before it only the start (w 0, AUC 1) is on the other side of the band's edge,
    # after it w 2.4 (AUC 0.52, retain below the floor). Two evaluations on each line
    calib, mon, model = _calibrator(2, bad=[2.4])
    _path(calib, model, [0.0, 4.0, 2.4])
    assert calib.best_index == 1
    calib.finish(model)
    # from w 0: t 1/2 -> w 2 (AUC 0.6, above), 3/4 -> w 3 (0.4, below); from w 2.4: t 1/2 -> w 3.2 (0.36),
    # 1/4 -> w 2.8 (0.44): none in the band; still candidates, and w 2.8 (AUC 0.44) has the best proxy
    assert mon.calls[3:] == pytest.approx([2.0, 3.0, 3.2, 2.8])
    assert float(model.w.detach()) == pytest.approx(2.8)


def test_a_kept_state_above_the_band_is_bisected_towards_a_later_one_below_it():
    # w 1 (AUC 0.8) kept: the later w 4 (AUC 0.2) has its retain below the floor
    calib, mon, model = _calibrator(3, bad=[4.0])
    _path(calib, model, [0.0, 1.0, 4.0])
    assert calib.best_index == 1
    out = calib.finish(model)
    # the line from w 1 (above: t = 0) to w 4: t 1/2 -> w 2.5, AUC 0.5: found at once
    assert mon.calls[3:] == pytest.approx([2.5])
    assert float(model.w.detach()) == pytest.approx(2.5)
    assert out["selected_index"] == 3


def test_nothing_is_searched_when_off_in_the_band_or_without_another_side():
    calib, mon, model = _calibrator(0, bad=[2.4])
    _path(calib, model, [0.0, 2.4, 4.0])
    calib.finish(model)
    assert mon.calls == pytest.approx([0.0, 2.4, 4.0])
    calib, mon, model = _calibrator(3)
    _path(calib, model, [0.0, 2.4, 4.0])  # w 2.4 is in the band and meets the floors: it is kept
    out = calib.finish(model)
    assert mon.calls == pytest.approx([0.0, 2.4, 4.0]) and out["selected_index"] == 1


def test_the_states_searched_never_exceed_the_budget_on_each_line():
    for n in (1, 2, 4):
        calib, mon, model = _calibrator(n, bad=[2.4, 2.6, 2.8, 3.2, 2.45, 2.5, 2.55, 2.7])
        _path(calib, model, [0.0, 2.4, 4.0, 2.45])
        calib.finish(model)
        assert len(mon.calls) - 4 <= 2 * n


def test_the_neighbours_survive_a_checkpoint(tmp_path):
    """A run resumed from its checkpoint searches the same lines as one that was not stopped."""
    from llm_unlearn.train.checkpoint import load_calibration_states, save_calibration_states

    calib, mon, model = _calibrator(3, bad=[2.4])
    _path(calib, model, [0.0, 2.4, 4.0])
    save_calibration_states(calib, tmp_path)
    again, mon2, model2 = _calibrator(3, bad=[2.4])
    again.restore(calib.state(), **load_calibration_states(tmp_path))
    calib.finish(model)
    again.finish(model2)
    assert mon2.calls == mon.calls[3:]
    assert float(model2.w.detach()) == float(model.w.detach())


def test_gated_runs_search_by_default():
    assert GATED_DEFAULTS["calibration.bisect_selected"] == 3
    assert build_config().calibration.bisect_selected == 0


@pytest.mark.parametrize(
    ("auc", "retain", "forget", "kept_lower", "expected"),
    [
        (0.5, False, True, True, (0.0, 0.5)),  # retain short: back towards the state that met it
        (0.5, False, False, True, (0.0, 0.5)),  # retain first
        (0.5, True, False, True, (0.5, 1.0)),  # forget EM over its ceiling: on towards the kept state
        (0.5, True, True, True, None),  # both met, within the band: found
        (0.7, True, True, True, (0.5, 1.0)),  # above the band, the kept end lower: towards it
        (0.7, True, True, False, (0.0, 0.5)),  # above the band, the kept end higher: away from it
        (0.3, True, True, True, (0.0, 0.5)),  # below the band, the kept end lower: away from it
        (0.3, True, True, False, (0.5, 1.0)),
        (None, True, True, True, None),  # nothing to steer by
    ],
)
def test_floors_step(auc, retain, forget, kept_lower, expected):
    got = cal.floors_step(
        0.0, 1.0, auc, tolerance=TOL, retain_met=retain, forget_met=forget, kept_is_lower=kept_lower
    )
    assert got == expected


def test_a_kept_state_below_the_retain_floor_is_searched_towards_one_that_met_it():
    # w 4 (AUC 0.2) has the best proxy but its retain is under the floor; w 3 too; the start (w 0) met the
    # retain floor (forget EM 1 there: only the retain half counts for the line's end)
    cfg = build_config(
        overrides={
            "calibration.bisect_selected": 3,
            "calibration.mode": "gate",
            "calibration.tolerance": TOL,
            "calibration.retain_floor": 0.9,
            "calibration.forget_em_max": 0.2,
        }
    )
    mon = _Monitor(bad=[4.0])
    calib, model = Calibrator(cfg, mon, [10, 10], "chunk"), _One()
    _path(calib, model, [0.0, 4.0])
    assert calib.best_index == 1
    out = calib.finish(model)
    # the line from w 0 (t = 0) to w 4: t 1/2 -> w 2 (AUC 0.6, floors met: above the band, towards the kept
    # end, the lower), t 3/4 -> w 3 (AUC 0.4: below, back), t 5/8 -> w 2.5 (AUC 0.5: found)
    assert mon.calls[2:] == pytest.approx([2.0, 3.0, 2.5])
    assert float(model.w.detach()) == pytest.approx(2.5)
    assert out["bisections"][0]["why"] == "kept state below the retain floor"


def test_a_kept_state_without_an_auc_is_still_searched_for_retain():
    """Evaluations without an MIA AUC (no documents to score) still have a retain floor: the retain line
    runs, and nothing in it needs the missing AUC."""

    class _NoAuc(_Monitor):
        def evaluate(self, model, **kw):
            row = super().evaluate(model, **kw)
            row["mia_auc"] = None
            row["proxy"] = row["task_aggregate"]
            return row

    cfg = build_config(
        overrides={
            "calibration.bisect_selected": 2,
            "calibration.mode": "gate",
            "calibration.tolerance": TOL,
            "calibration.retain_floor": 0.9,
            "calibration.forget_em_max": 0.2,
        }
    )
    mon = _NoAuc(bad=[4.0])  # the start misses the forget ceiling, w 4 the retain floor: w 4 is kept
    calib, model = Calibrator(cfg, mon, [10, 10], "chunk"), _One()
    _path(calib, model, [0.0, 4.0])
    calib.finish(model)  # no AUC to steer by: the first state on the line ends the search
    assert mon.calls[2:] == pytest.approx([2.0])

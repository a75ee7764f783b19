"""calibration.extend_revisit: an extension pass of a gated run trains every chunk's rows in the schedule's
order (the gate deciding which forget rows are pushed), in the last chunk's number of steps. The MIA
AUC is measured over every forget document, so a run held above the band by units of earlier chunks that
relapsed is not stuck with a last chunk whose own rows are all gated off."""

from __future__ import annotations

import json

import pytest
from test_calibrated_run import _holdout_file, _run

from llm_unlearn.config import build_config
from llm_unlearn.data.schedule import FORGET, RETAIN, plan_chunks
from llm_unlearn.train.extend import extension_rows, revisits


def test_extension_rows_are_every_chunk_in_the_schedules_order():
    plan = plan_chunks(7, 21, 3, 3, split_retain=True, seed=0, sequential=True)
    assert len(plan) == 3, "premise: chunks of 3, 3 and 1 forget rows"
    got = extension_rows(plan, revisit=True)
    assert got == plan[0] + plan[1] + plan[2]
    forget = [r for k, r in got if k == FORGET]
    retain = [r for k, r in got if k == RETAIN]
    assert forget == list(range(7))
    # the schedule's ratio is kept: 3 retain rows after each forget row, every retain row once
    assert sorted(retain) == list(range(21))
    for i, (kind, _) in enumerate(got):
        if kind == FORGET:
            assert [k for k, _ in got[i + 1 : i + 4]] == [RETAIN] * 3
    # without revisiting, or with one chunk: the last chunk as it is
    assert extension_rows(plan, revisit=False) == plan[-1]
    one = plan_chunks(4, 8, 10, 2, split_retain=True, seed=0, sequential=True)
    assert extension_rows(one, revisit=True) == one[-1]
    # the plan itself is left as it was
    assert [r for k, r in plan[-1] if k == FORGET] == [6]


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"calibration.mode": "gate"}, True),  # the default: on with the gate
        ({"calibration.mode": "gate", "calibration.extend_revisit": False}, False),
        ({"calibration.mode": "stop"}, False),  # no gate: every earlier row would be pushed again
        ({"calibration.mode": "gate", "calibration.revisit": True}, False),  # the last chunk holds them all
    ],
)
def test_revisits_only_under_the_gate(over, expected):
    assert revisits(build_config(overrides=over)) is expected


# a gated run whose learning rate is too small to reach the band: it extends; chunks of 6 forget rows
OPTS = {
    "calibration.mode": "gate",
    "calibration.eval_every": 8,
    "calibration.eval_items": 4,
    "calibration.eval_max_new_tokens": 4,
    "calibration.extend": 1,
    "calibration.bisect": 0,
    "schedule.optimizer_scope": "run",
    "schedule.chunk_size": 6,
    "schedule.epochs": 1,
    "train.learning_rate": 1e-3,
}


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extend_revisit")
    base = {
        "calibration.holdout": str(_holdout_file(tiny_world, tmp)),
        "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
        **OPTS,
    }
    out = {}
    for name, flag in (("revisit", True), ("own", False)):
        summary = _run(tiny_world, tmp / name, **base, **{"calibration.extend_revisit": flag})
        out[name] = (summary, json.loads((tmp / name / "run.json").read_text()))
    return out


def test_an_extension_pass_trains_every_row_in_the_last_chunks_steps(runs):
    summary, run = runs["revisit"]
    ext = summary["calibration"]["extensions"]
    assert ext, "premise: the run ends above the band, still falling, and extends"
    plan, chunks = run["plan"], run["chunks"]
    assert len(plan) >= 2
    passes = [c for c in chunks if c.get("extension")]
    assert len(passes) == len(ext)
    n_forget, n_retain = sum(c["n_forget"] for c in plan), sum(c["n_retain"] for c in plan)
    for p in passes:  # every row of the run, forget and retain
        assert (p["n_forget"], p["n_retain"]) == (n_forget, n_retain)
    # the budget is the last chunk's: the pass takes that many steps at most (fewer when it stops early)
    assert all(e["steps"] == ext[0]["steps"] for e in ext)
    assert summary["steps_done"] <= summary["total_steps"] + len(ext) * ext[0]["steps"]
    assert summary["steps_done"] > summary["total_steps"]
    # the plan written to run.json is the schedule's, not the extension's
    assert plan[-1]["n_forget"] < n_forget


def test_without_revisiting_an_extension_is_the_last_chunk_again(runs):
    summary, run = runs["own"]
    ext = summary["calibration"]["extensions"]
    assert ext, "premise: the same run extends"
    last = run["plan"][-1]
    for p in (c for c in run["chunks"] if c.get("extension")):
        assert (p["n_forget"], p["n_retain"]) == (last["n_forget"], last["n_retain"])
    # up to the first extension both runs made the same evaluations (the option changes nothing before)
    a = runs["revisit"][0]["calibration"]["evaluations"]
    b = summary["calibration"]["evaluations"]
    n = runs["revisit"][0]["calibration"]["extensions"][0]["from_evaluation"] + 1
    key = ("step", "mia_auc", "forget_em", "proxy")
    assert [[e[k] for k in key] for e in a[:n]] == [[e[k] for k in key] for e in b[:n]]

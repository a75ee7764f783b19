"""calibration.retain_floor / forget_em_max in a calibrated run: the kept state is the best candidate
that meets the floors, and run.json says which floors applied."""

from __future__ import annotations

import json

from test_calibrated_run import _holdout_file, _run

from llm_unlearn.train import calibration as cal


def test_the_kept_state_meets_the_floors_when_an_evaluation_does(one_torch_thread, tiny_world, tmp_path):
    out = tmp_path / "floors"
    floors = {"retain_floor": 0.9, "forget_em_max": 0.5}
    summary = _run(
        tiny_world,
        out,
        **{
            "calibration.holdout": str(_holdout_file(tiny_world, tmp_path)),
            "calibration.forget_documents": str(tiny_world["data_dir"] / "mia" / "member.jsonl"),
            "schedule.chunk_size": 15,
            "calibration.eval_every": 4,
            "calibration.eval_items": 8,
            **{f"calibration.{k}": v for k, v in floors.items()},
        },
    )
    c = summary["calibration"]
    evs, idx = c["evaluations"], c["selected_index"]
    assert c["retain_floor"] == 0.9 and c["forget_em_max"] == 0.5
    ok = [cal.meets_floors(e, evs[0], **floors) and e["proxy"] is not None for e in evs]
    assert idx == cal.select_best(evs, **floors)[0]
    if any(ok):  # the selection took the best proxy among those that meet the floors
        assert ok[idx]
        assert evs[idx]["proxy"] == max(e["proxy"] for e, good in zip(evs, ok) if good)
        assert "meet the floors" in c["selection_reason"]
    else:
        assert "no evaluation met" in c["selection_reason"]
    run = json.loads((out / "run.json").read_text())
    assert run["calibration"]["selected_index"] == idx

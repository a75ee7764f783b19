"""`demo --data` on SemEval-format files of both id conventions (issue 19): the member documents named
by unit id (the organizers' train split) or by a record id with its suffix (their validation split)
are found, the MIA is measured before and after, and the unlearning is calibrated."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("convention", ["unit id", "record id"])
def test_demo_on_user_data_measures_the_mia_and_calibrates(tmp_path, convention):
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
    from llm_unlearn.demo import run_demo

    ds = make_synthetic_dataset(n_entities_per_task=2, seed=3)
    paths = write_synthetic_dataset(ds, tmp_path / "user")
    if convention == "record id":  # name each member by one of its unit's forget records, quoted
        from llm_unlearn.data.slices import unit_key

        first = {}
        for r in ds.forget:
            first.setdefault(unit_key(r["id"]), r["id"])
        rows = [json.loads(x) for x in paths["member"].read_text().splitlines()]
        rows = [{**d, "id": f'"{first[d["id"]]}"'} for d in rows]
        assert all(re.fullmatch(r'"[0-9a-f]+(sc|qa)\d+"', d["id"]) for d in rows), rows[:2]
        paths["member"].write_text("".join(json.dumps(d) + "\n" for d in rows))
    result = run_demo(
        tmp_path / "out",
        data=str(tmp_path / "user"),
        progress=False,
        print_table=False,
        unlearn_overrides={"schedule.epochs": 1},
    )
    assert result["before"]["mia_auc"] is not None and result["after"]["mia_auc"] is not None
    run = json.loads((tmp_path / "out" / "unlearned" / "run.json").read_text())
    assert run["config"]["calibration"]["holdout"], "the demo on user data ran uncalibrated"
    assert run["calibration"], run.get("calibration")
    members = (tmp_path / "out" / "data" / "mia" / "member.jsonl").read_text().splitlines()
    assert len(members) == len(ds.member_docs)

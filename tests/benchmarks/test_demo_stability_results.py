"""The committed demo-stability distributions (issue 19.2) are what their runs say, and the README's
numbers are theirs: recomputed from the per-run rows, never pinned from one machine's floats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


def _module():
    return load("demo_stability")


FILES = sorted(p.name for p in RESULTS.glob("demo-stability*.json"))
DEFAULT = "demo-stability-retain-guard.json"  # the default's file: the README's demo section reports it


@pytest.mark.parametrize("name", FILES)
def test_summary_is_recomputed_from_the_runs(name):
    d = json.loads((RESULTS / name).read_text())
    runs = d["runs"]
    assert len(runs) >= 10 and len({(r["seed"], r["perturb"]) for r in runs}) == len(runs)
    for r in runs:
        assert r["abs_auc_dev"] == pytest.approx(abs(r["after"]["mia_auc"] - 0.5), abs=1e-12)
        assert (r["weights_moved"] > 0) == (r["perturb"] == "ulp")
    assert d["summary"] == _module().summarize(runs)


@pytest.mark.parametrize("name", FILES)
def test_the_readme_table_holds_every_committed_distribution_as_its_file_says(name):
    row = _module().table_row(json.loads((RESULTS / name).read_text()))
    assert row in (REPO / "README.md").read_text().splitlines(), row


def test_merge_summarizes_the_union_of_the_runs_and_refuses_other_options(tmp_path, capsys):
    mod = _module()
    d = json.loads((RESULTS / "demo-stability.json").read_text())
    a = {**d, "runs": d["runs"][:4], "summary": mod.summarize(d["runs"][:4])}
    b = {**d, "runs": d["runs"][4:], "summary": mod.summarize(d["runs"][4:])}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "m.json"
    assert mod.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["runs"] == d["runs"] and m["summary"] == d["summary"]  # the parts' summaries disagree
    assert a["summary"] != d["summary"]
    # the options each run recorded decide (the same whether from --set or from the gated defaults)
    other = [{**r, "options": {**r["options"], "calibration.pull_band": 0.1}} for r in b["runs"]]
    (tmp_path / "c.json").write_text(json.dumps({**b, "runs": other}))
    with pytest.raises(SystemExit):
        mod.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--out", str(out)])
    assert "different options" in capsys.readouterr().err
    (tmp_path / "d.json").write_text(json.dumps({**b, "overrides": {"calibration.pull_band": 0.25}}))
    assert mod.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "d.json"), "--out", str(out)]) == 0


def test_the_defaults_runs_recorded_the_gated_defaults():
    """Every run of the default's file used exactly the values a gated calibrated run now takes (the
    gated defaults, and the defaults of the options recorded beside them)."""
    from llm_unlearn.config import GATED_DEFAULTS, build_config
    from llm_unlearn.sweep.objective import flat

    defaults = flat(build_config().to_dict())
    expected = {**GATED_DEFAULTS, **{k: defaults[k] for k in _module().RECORDED}}
    for r in json.loads((RESULTS / DEFAULT).read_text())["runs"]:
        assert r["options"] == expected
    # the 20 runs of an earlier default: the same but for NPO's beta from the gap, the kept state's bisection
    # and the retain guard
    later = ("calibration.npo_beta_from_gap", "calibration.bisect_selected", "calibration.retain_guard")
    before = {k: v for k, v in expected.items() if k not in later}
    for r in json.loads((RESULTS / "demo-stability.json").read_text())["runs"]:
        assert r["options"] == before


def test_the_readme_reports_the_committed_distribution():
    """The demo section's sentence is the default's file (its table row: the test above)."""
    text = (REPO / "README.md").read_text()
    d = json.loads((RESULTS / DEFAULT).read_text())
    assert d["label"].startswith("**the default**")
    others = [n for n in FILES if n != DEFAULT]
    assert not any(
        json.loads((RESULTS / n).read_text()).get("label", "").startswith("**the default**") for n in others
    )
    s = d["summary"]
    assert f"median |AUC − 0.5| **{s['abs_auc_dev']['median']:.3f}**" in text
    assert f"worst **{s['abs_auc_dev']['worst']:.3f}**" in text
    assert f"**{s['auc']['min']:.3f} – {s['auc']['max']:.3f}, median\n{s['auc']['median']:.3f}**" in text


def test_the_readme_spread_against_the_noise_floor_is_the_files():
    """The demo's spread that the README compares with its noise floor (evaluation/metrics/mia_noise.py)
    is the committed runs' own: the standard deviation and mean of AUC - 0.5 over them."""
    import statistics

    text = (REPO / "README.md").read_text()
    runs = json.loads((RESULTS / "demo-stability.json").read_text())["runs"]
    dev = [r["after"]["mia_auc"] - 0.5 for r in runs]
    sd, mean = statistics.stdev(dev), statistics.mean(dev)
    assert f"the {len(runs)} runs have {sd:.3f})" in text
    assert f"The demo's {len(runs)} runs (standard deviation {sd:.3f} around a mean of +{mean:.3f}" in text

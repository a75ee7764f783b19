"""The benchmark harness's machinery: progress lines (step i of n, time left, a heartbeat), the part
registry, part files and their merge, the spread over repeats, and the summary beside the committed
numbers. Tiny sizes: a few seconds in all."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from benchmark_scripts import load

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    return load(name)


@pytest.fixture(scope="module")
def hz():
    return _load("harness")


@pytest.fixture(scope="module")
def bench():
    return _load("bench")


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_progress_lines_say_what_step_and_time_left(hz):
    clock, out = Clock(), io.StringIO()
    p = hz.Progress("steps", 4, 40.0, stream=out, heartbeat_s=20.0, min_interval_s=0.0, clock=clock)
    p.start("training step ratios")
    p.begin("round 1/4, ours")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[bench steps] training step ratios: 4 steps, about 40s")
    # before any step is done the estimate is the a priori one
    assert "round 1/4, ours: step 1 of 4" in lines[1] and "about 40s left" in lines[1]
    clock.t += 20.0  # the first step took twice the a priori 10 s: 3 more steps of 20 s
    p.begin("round 2/4, ours")
    assert "step 2 of 4" in out.getvalue().splitlines()[-1] and "about 1m00s left" in out.getvalue()
    clock.t += 5.0
    assert abs(p.eta() - 55.0) < 1e-9  # 5 s into a 20 s step
    clock.t += 30.0
    assert abs(p.eta() - 40.0) < 1e-9  # a step running long: never less than the steps after it
    clock.t -= 30.0
    # the heartbeat prints only after heartbeat_s of silence, and says how long the step has run
    n = len(out.getvalue().splitlines())
    assert p.tick() is False
    clock.t += 20.0
    assert p.tick() is True
    last = out.getvalue().splitlines()[-1]
    assert len(out.getvalue().splitlines()) == n + 1 and "25s in this step" in last and "step 2 of 4" in last
    assert p.tick() is False  # just printed
    p.close("done")
    assert out.getvalue().splitlines()[-1].startswith("[bench steps] done in 45s")


def test_progress_throttles_but_never_stays_silent(hz):
    clock, out = Clock(), io.StringIO()
    p = hz.Progress("eval", 100, None, stream=out, heartbeat_s=20.0, min_interval_s=5.0, clock=clock)
    for i in range(100):  # 100 steps of 1 s: a line at most every 5 s, at least every 20 s
        p.begin(f"item {i}")
        clock.t += 1.0
        p.tick()
    p.close()
    assert 15 <= len(out.getvalue().splitlines()) <= 25
    assert "about ? left" not in out.getvalue().splitlines()[-2]  # known after the first step


def test_heartbeat_thread_prints_inside_one_long_step(hz):
    out = io.StringIO()
    p = hz.Progress("mmlu", 2, 10.0, stream=out, heartbeat_s=0.2, min_interval_s=0.0).start()
    p.begin("one long call")
    time.sleep(0.7)
    p.close()
    beats = [x for x in out.getvalue().splitlines() if "in this step" in x]
    assert beats and all("one long call: step 1 of 2" in x for x in beats)


def test_merge_takes_every_section_and_refuses_mixed_parts(hz):
    def part(name, section, seconds, **kw):
        head = {"shape": "tiny", "device": "cpu", "dtype": "float32", "threads": 1, "quick": True}
        return {**head, **kw, "part": name, "header": {"schema": "s", "shape": "tiny"}, "section": section,
                "seconds": seconds, "loadavg_start": [1.0], "loadavg_end": [2.0], "started_at": "t"}  # fmt: skip

    merged = hz.merge_parts(
        {"steps": part("steps", {"variants": {}}, 10.0), "mmlu": part("mmlu", {"mmlu": 1}, 5.5)}
    )
    assert merged["quick"] is True and merged["mmlu"] == 1 and merged["variants"] == {}
    assert merged["seconds"] == 15.5 and set(merged["parts"]) == {"steps", "mmlu"}
    with pytest.raises(ValueError, match="shape"):
        hz.merge_parts({"steps": part("steps", {}, 1.0), "mmlu": part("mmlu", {}, 1.0, shape="small")})
    with pytest.raises(ValueError):
        hz.register_part("quick", "no", lambda a, c: {}, full_s=1)


def test_spread_verdict_and_agreement(hz):
    a = [110.0, 100.0, 120.0, 90.0]
    b = [100.0, 100.0, 100.0, 100.0]
    assert hz.repeat_ratios(a, b, 2) == pytest.approx([1.05, 1.05])
    assert hz.repeat_ratios(a, b, 1) == pytest.approx([1.1, 1.0, 1.2, 0.9])
    sp = hz.spread(hz.repeat_ratios(a, b, 1))
    assert sp["min"] <= sp["median"] <= sp["max"] and sp["n"] == 4
    assert hz.verdict(1.04, sp, ("<=", 1.05)) == "met"
    assert hz.verdict(1.06, sp, ("<=", 1.05)) == "within spread"  # a repeat reaches the bound
    assert hz.verdict(1.5, {"min": 1.4, "max": 1.6}, ("<=", 1.05)) == "missed"
    assert hz.verdict(2.1, None, (">=", 2.0)) == "met"
    assert hz.agrees(1.0, {"min": 0.9, "max": 1.1}, 1.05, None) is True
    assert hz.agrees(1.0, {"min": 0.95, "max": 1.02}, 1.2, {"min": 1.1, "max": 1.3}) is False
    assert hz.agrees(1.0, None, None, None) is None


def test_parts_run_alone_and_merge_quick(bench, hz, tmp_path, capsys, monkeypatch):
    """A steps part alone (tiny shape, 2 repeats of 1 round), a stand-in second part, the merge: the
    merged file is marked quick, has the full run's keys, the repeats' spread and the summary."""
    out = tmp_path / "res"
    common = ["--shape", "tiny", "--quick", "--results-dir", str(out), "--cache-dtype", "float32"]
    bench.main(["--list-parts"])
    assert capsys.readouterr().out.split() == list(hz.PARTS) and {"steps", "mmlu", "eval", "scaling"} <= set(
        hz.PARTS
    )
    bench.main(common + ["--part", "steps", "--variants", "ours,trunk_floor",
                         "--steps", "1", "--repeats", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert "[bench steps" in err and "step 1 of 7" in err and "left" in err and "done in" in err
    steps = json.loads((out / "tiny-cpu.quick.steps.json").read_text())
    assert steps["quick"] is True and steps["part"] == "steps" and steps["seconds"] > 0
    assert steps["section"]["repeats"] == 2 and steps["section"]["steps"] == 2
    assert len(steps["loadavg_start"]) == 3
    # merging needs every registered part's file, and names the make target of a missing one
    with pytest.raises(SystemExit, match="make bench-mmlu"):
        bench.main(common + ["--merge"])
    fake = {"mmlu": {"questions": 6, "prompt_tokens": {"prompt_mean": 600.0, "prefix_mean": 500.0},
                     "prefix_cache": {"speedup": 3.5, "agreement": 1.0, "seconds_runs": [1.0, 1.0, 1.0],
                                      "questions_per_s": 6.0, "bfloat16": None},
                     "whole_prompt": {"seconds_runs": [3.4, 3.5, 3.9], "questions_per_s": 1.7}}}  # fmt: skip
    monkeypatch.setattr(hz, "PARTS", {"steps": hz.PARTS["steps"],
                                      "mmlu": hz.Part("mmlu", "stand-in", lambda a, c: fake, 1, 1)})  # fmt: skip
    bench.main(common + ["--part", "mmlu"])
    capsys.readouterr()
    merged = bench.main(common + ["--merge"])
    summary = capsys.readouterr().out
    saved = json.loads((out / "tiny-cpu.quick.json").read_text())
    assert saved["quick"] is True and set(saved["parts"]) == {"steps", "mmlu"}
    for key in (
        "variants",
        "ratios",
        "ratios_min",
        "ratios_cpu",
        "targets",
        "mmlu",
        "eval",
        "checks",
        "steps",
    ):
        assert key in saved, key
    rep = saved["ratio_repeats"]["ours/trunk_floor"]
    assert rep["n"] == 2 and rep["min"] <= rep["median"] <= rep["max"]
    t = saved["targets"]["ours/trunk_floor"]
    assert t["repeats"]["n"] == 2 and t["verdict"] in ("met", "within spread", "missed")
    assert merged["targets"]["mmlu.prefix_cache.speedup"]["met"] is True
    assert "ours / trunk_floor" in summary and "MMLU prefix cache speedup" in summary
    # the stand-in's speedup: the median over its three alternating pairs, with their spread
    assert "3.500 [3.400-3.900]" in summary


def test_the_step_raises_no_deprecation_warning(bench, tmp_path):
    """Gradient checkpointing by its current name; peft's read of the old property silenced."""
    import torch

    shape = dict(bench.SHAPES["tiny"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = bench.Bench(shape, torch.device("cpu"), torch.float32, 0, "float32", tmp_path, ["ours_gc"])
        bench.run_steps(b, ["ours_gc"], 1, 1, probes=False)
    dep = [
        w
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and "deprecated" in str(w.message)
    ]
    assert not dep, [str(w.message) for w in dep]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_has_a_target_per_part():
    dry = subprocess.run(["make", "-n", "bench-steps", "bench-quick", "bench-merge", "PY=python"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "--part steps" in dry.stdout and "--quick" in dry.stdout and "--merge" in dry.stdout


def test_committed_quick_run_has_the_full_runs_keys():
    quick = ROOT / "benchmarks" / "results" / "small-cpu.quick.json"
    full = ROOT / "benchmarks" / "results" / "small-cpu.json"
    if not (quick.is_file() and full.is_file()):
        pytest.skip("no committed quick run yet (make bench-quick)")
    q, f = json.loads(quick.read_text()), json.loads(full.read_text())
    # every key of the full run but the scaling sweep's, which the quick run does not make (issue 22.1)
    assert q["quick"] is True and set(f) - {"scaling"} <= set(q), set(f) - set(q)
    assert set(q["parts"]) == {"steps", "mmlu", "eval"} and len(q["loadavg_start"]) == 3
    for name in ("ours/trunk_floor", "seed_style/ours"):
        rep = q["ratio_repeats"][name]
        assert rep["n"] == q["repeats"] >= 3 and rep["min"] <= rep["median"] <= rep["max"]
        assert q["targets"][name]["verdict"] in ("met", "within spread", "missed")
    assert q["mmlu"]["prefix_cache"]["agreement"] == 1.0 and q["eval"]["scores_agree"] is True


def _recording_progress(hz, out):
    made = []

    def factory(units, total_weight=None):
        p = hz.Progress(
            "t", units, None, total_weight=total_weight, stream=out, heartbeat_s=None, min_interval_s=0
        )
        made.append(p)
        return p.start()

    return factory, made


def test_scaling_and_realistic_eval_report_progress(bench, hz, tmp_path, monkeypatch):
    """The parts of make bench that the quick run leaves out still count their steps (tiny sizes)."""
    import torch

    sc = bench._load_sibling("scaling")
    eb = bench._load_sibling("eval_bench")
    monkeypatch.setattr(sc, "AXES", {"seq": [16], "vocab": [256], "answer_fraction": [0.25]})
    monkeypatch.setattr(sc, "BASE", {"seq": 16, "vocab": 256, "answer_fraction": 0.25})
    out = io.StringIO()
    factory, made = _recording_progress(hz, out)
    tiny = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "batch": 2}
    sc.run(steps=1, shape=tiny, out_dir=tmp_path, in_process=True, plot=False, progress=factory)
    made[-1].close()
    assert "step 2 of 2" in out.getvalue() and "seed_style" in out.getvalue()
    if eb.semeval_slice(1, 1) is None:
        pytest.skip("../shared/data/semeval25 not found")
    out = io.StringIO()
    factory, made = _recording_progress(hz, out)
    small = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "vocab": 512}
    ev = eb.semeval_bench(torch.device("cpu"), tmp_path, max_new_tokens=4, repeats=1, progress=factory,
                          n_per_split=4, n_mia=2, epochs=1, small=small)  # fmt: skip
    made[-1].close()
    assert ev["batched"]["seconds"] > 0 and "step 6 of 6" in out.getvalue()

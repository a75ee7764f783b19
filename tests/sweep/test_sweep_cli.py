"""`llm-unlearn sweep` end to end on a tiny untrained model: two worker processes on one SQLite study,
best.yaml through `train --config` as it is, a rerun that resumes (no trial added), the outputs."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

optuna = pytest.importorskip("optuna")

from llm_unlearn.cli import main  # noqa: E402
from llm_unlearn.outputs import manifest  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
    from llm_unlearn.demo import memorization_texts
    from llm_unlearn.io_utils import atomic_write_jsonl
    from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer

    root = tmp_path_factory.mktemp("sweep_world")
    ds = make_synthetic_dataset(n_entities_per_task=2, seed=1)
    write_synthetic_dataset(ds, root / "data")
    extra = make_synthetic_dataset(n_entities_per_task=2, seed=1001)  # never-seen people: the holdout
    hold = [{"id": "h" + d["id"], "document": d["document"]} for d in extra.member_docs]
    atomic_write_jsonl(root / "holdout.jsonl", hold)
    tok = train_bpe_tokenizer(memorization_texts(ds.forget + ds.retain, ds.documents), vocab_size=256)
    build_tiny_olmo2(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64).save_pretrained(
        root / "model"
    )
    tok.save_pretrained(root / "model")
    base = {
        "model": {"name_or_path": str(root / "model")},
        "data": {"data": str(root / "data"), "add_eos": True},
        "train": {"learning_rate": 1e-3, "seed": 0, "batch_size": 8},
        "schedule": {"chunk_size": 16, "epochs": 1, "retain_per_forget": 1},
        "lora": {"r": 2, "alpha": 4},
        "calibration": {
            "holdout": str(root / "holdout.jsonl"),
            "forget_documents": str(root / "data" / "mia" / "member.jsonl"),
            "eval_items": 2,
            "eval_max_new_tokens": 2,
            "eval_every": "chunk",
        },
    }
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    return root


def test_sweep_shares_the_cache_resumes_on_two_workers_and_best_yaml_trains(world, tmp_path):
    from llm_unlearn.train import cache_build

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out, db = tmp_path / "sweep", tmp_path / "sweep" / "study.db"
    argv = ["sweep", "--config", str(world / "base.yaml"), "--storage", f"sqlite:///{db}"]
    argv += ["--output-dir", str(out), "--heartbeat", "2", "--no-progress", "--confirm", "1"]
    argv += ["--confirm-seeds", "1"]
    try:
        built = cache_build.BUILD_COUNT
        assert main([*argv, "--trials", "2"]) == 0
        assert cache_build.BUILD_COUNT - built == 1  # two trials, one reference cache (DIR/shared/)
        rows = list(csv.DictReader((out / "trials.csv").open()))
        assert [r["state"] for r in rows] == ["complete", "complete"]
        assert rows[0]["default"] == "True"  # the base configuration is the first trial
        # the same study, a larger budget, two processes: exactly 3 trials in all
        assert main([*argv, "--trials", "3", "--workers", "2"]) == 0
        rows = list(csv.DictReader((out / "trials.csv").open()))
        assert [r["state"] for r in rows] == ["complete"] * 3
        summary = json.loads((out / "sweep.json").read_text())
        best = summary["methods"][0]["best"]
        # the best and the default trained again with one other seed (shared by the two processes);
        # the best is the higher mean of the confirmed ones
        confirmed = {int(r["number"]): float(r["mean"]) for r in rows if r["mean"]}
        top = max(rows, key=lambda r: (float(r["value"]), -int(r["number"])))
        assert set(confirmed) == {0, int(top["number"])} and all(r["seeds"] in ("1", "2") for r in rows)
        assert len(best["runs"]) == 2 and best["value"] == pytest.approx(sum(best["runs"]) / 2)
        assert best["value"] == pytest.approx(max(confirmed.values()))
        for name in ("best.yaml", "summary.txt", "split.json"):
            assert (out / name).is_file()
        assert (out / "plots" / "history-npo_rt_div.png").stat().st_size > 0
        assert "study.db" not in manifest(out)  # the user's storage: never the tool's to replace
        # the validation split never holds an evaluation unit
        units = json.loads((out / "split.json").read_text())["units"]
        assert not set(units["validation_forget"]) & set(units["evaluation_forget"])
        val_ids = {
            json.loads(x)["id"] for x in (out / "validation" / "forget.jsonl").read_text().splitlines()
        }
        ev_ids = {json.loads(x)["id"] for x in (out / "evaluation" / "forget.jsonl").read_text().splitlines()}
        assert val_ids and ev_ids and not val_ids & ev_ids

        # best.yaml as it is, through train --config
        run = tmp_path / "run"
        assert (
            main(["train", "--config", str(out / "best.yaml"), "--output-dir", str(run), "--no-progress"])
            == 0
        )
        used = json.loads((run / "run.json").read_text())["config"]
        for key, value in best["options"].items():
            sec, name = key.split(".", 1)
            assert used[sec][name] == pytest.approx(value), key

        # the same command again: the study is resumed, its budget already met, nothing added
        assert main([*argv, "--trials", "3"]) == 0
        assert len(list(csv.DictReader((out / "trials.csv").open()))) == 3
        assert json.loads((out / "sweep.json").read_text())["trials_run_here"] == 0  # nor confirmed again
    finally:
        torch.set_num_threads(n)

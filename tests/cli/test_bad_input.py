"""Bad input: one clear line on stderr, exit code 2, no traceback, no output written.

One table: every case builds its input in a temporary directory and runs `cli.main([...])` in this
process. A few cases must succeed instead (a BOM, a tokenizer without a pad token, prompts longer
than max_length): they are real inputs that llm-unlearn accepts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llm_unlearn import cli

FAST = [
    "--limit",
    "4",
    "--chunk-size",
    "4",
    "--retain-per-forget",
    "1",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--lora-r",
    "2",
    "--lora-alpha",
    "4",
    "--no-merge",
    "--no-plots",
    "--no-progress",
]


@dataclass
class Case:
    argv: list[str]
    out: Path  # must not exist afterwards (failures), or hold a finished run (successes)
    expect: str = ""  # a piece of the error line (failures) or of stderr (successes)
    ok: bool = False
    keep: dict[str, bytes] = field(default_factory=dict)  # an existing directory that must stay unchanged


def _jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _rows(world, split: str, n: int = 4) -> list[dict]:
    recs = world["ds"].forget if split == "forget" else world["ds"].retain
    return [
        {"id": r["id"], "input": r["input"], "output": r["output"], "task": r["task"], "split": split}
        for r in recs[:n]
    ]


def _train(world, tmp: Path, *extra: str, data: Path | None = None, model: Path | None = None) -> list[str]:
    return [
        "--quiet",
        "train",
        "--model",
        str(model or world["model_dir"]),
        "--data",
        str(data or world["data_dir"]),
        "--output-dir",
        str(tmp / "out"),
        *FAST,
        *extra,
    ]


def _data(
    world, tmp: Path, forget: list | None = None, retain: list | None = None, name: str = "data"
) -> Path:
    d = tmp / name
    _jsonl(d / "forget.jsonl", forget if forget is not None else _rows(world, "forget"))
    _jsonl(d / "retain.jsonl", retain if retain is not None else _rows(world, "retain"))
    return d


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the cases
def malformed_json(world, tmp):
    rows = _rows(world, "forget")
    d = _data(world, tmp, forget=[rows[0], '{"id": "x", "input": "a", "output": ', *rows[1:]])
    return Case(_train(world, tmp, data=d), tmp / "out", "line 2: malformed JSON")


def missing_field(world, tmp):
    rows = _rows(world, "forget")
    del rows[1]["output"]
    return Case(
        _train(world, tmp, data=_data(world, tmp, forget=rows)), tmp / "out", "missing field 'output'"
    )


def non_string_field(world, tmp):
    rows = _rows(world, "retain")
    rows[2]["input"] = 42
    return Case(_train(world, tmp, data=_data(world, tmp, retain=rows)), tmp / "out", "field 'input'")


def empty_file(world, tmp):
    d = _data(world, tmp)
    (d / "forget.jsonl").write_bytes(b"")
    return Case(_train(world, tmp, data=d), tmp / "out", "no records")


def bom_is_accepted(world, tmp):
    d = _data(world, tmp)
    for name in ("forget.jsonl", "retain.jsonl"):
        (d / name).write_bytes(b"\xef\xbb\xbf" + (d / name).read_bytes())
    return Case(_train(world, tmp, data=d), tmp / "out", ok=True)


def non_utf8_bytes(world, tmp):
    d = _data(world, tmp)
    raw = (d / "retain.jsonl").read_bytes().replace(b"a", b"\xff", 1)
    (d / "retain.jsonl").write_bytes(raw)
    return Case(_train(world, tmp, data=d), tmp / "out", "not valid UTF-8")


def id_in_both_sets(world, tmp):
    forget, retain = _rows(world, "forget"), _rows(world, "retain")
    retain[1]["id"] = forget[2]["id"]
    return Case(
        _train(world, tmp, data=_data(world, tmp, forget=forget, retain=retain)),
        tmp / "out",
        "in both the forget set",
    )


def unknown_extension(world, tmp):
    f = tmp / "forget.txt"
    f.write_text(json.dumps(_rows(world, "forget")[0]) + "\n")
    argv = [
        "--quiet",
        "train",
        "--model",
        str(world["model_dir"]),
        "--forget",
        str(f),
        "--output-dir",
        str(tmp / "out"),
        *FAST,
    ]
    return Case(argv, tmp / "out", "unsupported data file type '.txt'")


def directory_without_data(world, tmp):
    d = tmp / "nothing_here"
    d.mkdir()
    (d / "notes.md").write_text("no data\n")
    return Case(_train(world, tmp, data=d), tmp / "out", "no forget data found")


def missing_model_path(world, tmp):
    return Case(_train(world, tmp, model=tmp / "no_such_model"), tmp / "out", "model path not found")


def not_a_causal_lm(world, tmp):
    from transformers import DistilBertConfig, DistilBertModel

    m = tmp / "encoder"
    cfg = DistilBertConfig(vocab_size=len(world["tokenizer"]), dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    DistilBertModel(cfg).save_pretrained(m)
    world["tokenizer"].save_pretrained(m)
    return Case(_train(world, tmp, model=m), tmp / "out", "not a causal language model")


def tokenizer_without_pad_token(world, tmp):
    m = tmp / "model_nopad"
    shutil.copytree(world["model_dir"], m)
    cfg = json.loads((m / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (m / "tokenizer_config.json").write_text(json.dumps(cfg))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(m).pad_token is None  # the case is real
    return Case(_train(world, tmp, model=m), tmp / "out", ok=True)


def prompt_longer_than_max_length(world, tmp):
    return Case(
        _train(world, tmp, "--max-length", "12"), tmp / "out", "were longer than max_length=12", ok=True
    )


def chunk_size_zero(world, tmp):
    return Case(_train(world, tmp, "--chunk-size", "0"), tmp / "out", "chunk_size must be >= 1")


def chunk_size_negative(world, tmp):
    return Case(_train(world, tmp, "--chunk-size", "-3"), tmp / "out", "chunk_size must be >= 1")


def negative_retain_per_forget(world, tmp):
    return Case(
        _train(world, tmp, "--retain-per-forget", "-1"),
        tmp / "out",
        "retain_per_forget must be in [0, 1e+06]",
    )


def alpha_zero(world, tmp):
    return Case(_train(world, tmp, "--renyi-alpha", "0"), tmp / "out", "renyi_alpha must be > 0")


def alpha_negative(world, tmp):
    return Case(_train(world, tmp, "--renyi-alpha", "-0.5"), tmp / "out", "renyi_alpha must be > 0")


def beta_zero(world, tmp):
    return Case(_train(world, tmp, "--npo-beta", "0"), tmp / "out", "npo_beta must be > 0")


def negative_multiplier(world, tmp):
    return Case(_train(world, tmp, "--retain-weight", "-1"), tmp / "out", "retain_weight must be >= 0")


def negative_multiplier_in_yaml(world, tmp):
    y = tmp / "cfg.yaml"
    y.write_text("objective:\n  divergence_weight: -2\n")
    return Case(_train(world, tmp, "--config", str(y)), tmp / "out", "divergence_weight must be >= 0")


def unknown_preset(world, tmp):
    return Case(
        _train(world, tmp, "--preset", "no-such-preset"), tmp / "out", "unknown preset 'no-such-preset'"
    )


def output_dir_with_a_different_run(world, tmp):
    out = tmp / "out"
    assert cli.main(_train(world, tmp)) == 0
    keep = _tree(out)
    return Case(_train(world, tmp, "--lr", "3e-4"), out, "train.learning_rate: 0.0001 -> 0.0003", keep=keep)


def mmlu_malformed_row(world, tmp):
    d = tmp / "mmlu"
    (d / "dev").mkdir(parents=True)
    (d / "test").mkdir()
    (d / "dev" / "anatomy_dev.csv").write_text("What is 1+1?,1,2,3,4,B\n")
    (d / "test" / "anatomy_test.csv").write_text("What is 2+2?,1,2,3,4,D\nWhat is 3+3?,6,7,8\n")
    argv = [
        "--quiet",
        "mmlu",
        "--model",
        str(world["model_dir"]),
        "--data",
        str(d),
        "--output-dir",
        str(tmp / "out"),
        "--no-progress",
    ]
    return Case(argv, tmp / "out", "expected 6 fields")


def mia_without_documents(world, tmp):
    mia = tmp / "mia"
    shutil.copytree(world["data_dir"] / "mia", mia)
    (mia / "nonmember.jsonl").write_text("\n")
    argv = [
        "--quiet",
        "evaluate",
        "--model",
        str(world["model_dir"]),
        "--data",
        str(world["data_dir"]),
        "--mia-data",
        str(mia),
        "--output-dir",
        str(tmp / "out"),
        "--limit",
        "2",
        "--no-progress",
    ]
    return Case(argv, tmp / "out", "no documents")


def unknown_section_in_yaml(world, tmp):
    y = tmp / "cfg.yaml"
    y.write_text("objectiv:\n  npo_beta: 1\n")
    return Case(_train(world, tmp, "--config", str(y)), tmp / "out", "unknown section 'objectiv'")


def invalid_yaml(world, tmp):
    y = tmp / "cfg.yaml"
    y.write_text("objective: [unclosed\n  npo_beta: 1\n")
    return Case(_train(world, tmp, "--config", str(y)), tmp / "out", "not valid YAML")


CASES: dict[str, Callable] = {
    f.__name__: f
    for f in [
        malformed_json,
        missing_field,
        non_string_field,
        empty_file,
        bom_is_accepted,
        non_utf8_bytes,
        id_in_both_sets,
        unknown_extension,
        directory_without_data,
        missing_model_path,
        not_a_causal_lm,
        tokenizer_without_pad_token,
        prompt_longer_than_max_length,
        chunk_size_zero,
        chunk_size_negative,
        negative_retain_per_forget,
        alpha_zero,
        alpha_negative,
        beta_zero,
        negative_multiplier,
        negative_multiplier_in_yaml,
        unknown_preset,
        output_dir_with_a_different_run,
        mmlu_malformed_row,
        mia_without_documents,
        unknown_section_in_yaml,
        invalid_yaml,
    ]
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny_world, tmp_path, capsys, caplog):
    case = CASES[name](tiny_world, tmp_path)
    capsys.readouterr()
    rc = cli.main(case.argv)
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "Traceback" not in captured.out
    if case.ok:
        assert rc == 0, err
        assert (case.out / "adapter" / "adapter_model.safetensors").is_file()
        assert case.expect in err + caplog.text, err  # (pytest captures the log records)
        return
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and case.expect in lines[0], lines[0]
    if case.keep:
        assert _tree(case.out) == case.keep  # the other run is untouched
    else:
        assert not case.out.exists(), sorted(p.name for p in case.out.rglob("*"))


def test_debug_shows_the_traceback(tiny_world, tmp_path):
    with pytest.raises(Exception, match="chunk_size must be >= 1"):
        cli.main(["--debug", *_train(tiny_world, tmp_path, "--chunk-size", "0")[1:]])


def test_overwrite_replaces_a_different_run(tiny_world, tmp_path, capsys):
    assert cli.main(_train(tiny_world, tmp_path)) == 0
    assert cli.main(_train(tiny_world, tmp_path, "--lr", "3e-4", "--overwrite")) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["train"]["learning_rate"] == 3e-4

"""The one runner: a benchmark registered in a test gets `evaluate --benchmark NAME`, the output policy
and the lock with no other edit; TOFU and MUSE go through it too; declared flags are range-checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_tofu_muse import make_muse_dir, make_tofu_dir

from llm_unlearn import cli
from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation import run as runner
from llm_unlearn.evaluation.benchmark import (
    benchmark_names,
    get_benchmark,
    register_benchmark,
    unregister_benchmark,
)
from llm_unlearn.evaluation.report import make_summary


@dataclass
class DummyOptions:
    data: str | None = opt(None, "a directory with d.txt", flag="--data", path=True)
    level: float = opt(0.5, "a level", flag="--dummy-level", range=(0, 1, False, False))


class Dummy:
    name = "dummy"
    summary = "a benchmark of the tests"
    options = DummyOptions
    required = ("data",)
    exclusive = ()
    outputs = ("dummy.json",)
    during_run = None  # a callable run while the lock is held

    def inputs(self, opts):
        return [opts.data]

    def check(self, opts):
        return (Path(opts.data) / "d.txt").read_text()

    def run(self, model, tokenizer, data, opts, out_dir, progress, *, source=None):
        if self.during_run is not None:
            self.during_run()
        (out_dir / "dummy.json").write_text(json.dumps({"data": data, "level": opts.level}))
        return make_summary("dummy", {"level": opts.level}, {"chars": len(data)}, {"lines": 1})

    def text(self, summary, out_dir):
        return f"dummy level {summary['headline']['level']}"


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.ModelSource, "load", lambda self: ("model", "tokenizer"))
    bench = register_benchmark(Dummy())
    data = tmp_path / "in"
    data.mkdir()
    (data / "d.txt").write_text("hello")
    yield bench, data
    unregister_benchmark("dummy")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_registry_names_and_unknown_benchmark():
    assert benchmark_names()[:4] == ("semeval", "tofu", "muse", "mmlu")
    with pytest.raises(
        UserError, match="unknown benchmark 'nope'; known benchmarks: semeval, tofu, muse, mmlu"
    ):
        get_benchmark("nope")


def test_a_registered_benchmark_gets_the_cli_the_policy_and_the_lock(dummy, tmp_path, capsys):
    bench, data = dummy
    out = tmp_path / "out"
    argv = ["evaluate", "--benchmark", "dummy", "--model", str(tmp_path / "m"), "--data", str(data)]
    assert cli.main([*argv, "--output-dir", str(out), "--dummy-level", "0.25"]) == 0
    assert "dummy level 0.25" in capsys.readouterr().out
    assert json.loads((out / "dummy.json").read_text()) == {"data": "hello", "level": 0.25}
    assert json.loads((out / ".llm-unlearn.json").read_text())["kind"] == "evaluate"
    assert cli.main([*argv, "--output-dir", str(out)]) == 0  # our own output: replaced
    capsys.readouterr()
    # a directory holding a user's file: refused without --overwrite, the file kept
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    before = _sha(user / "notes.txt")
    assert cli.main([*argv, "--output-dir", str(user)]) == 2
    assert "is not empty" in _error(capsys)
    assert cli.main([*argv, "--output-dir", str(user), "--overwrite"]) == 0
    assert _sha(user / "notes.txt") == before and (user / "dummy.json").is_file()
    capsys.readouterr()
    # an output inside its --data input
    assert cli.main([*argv, "--output-dir", str(data / "o")]) == 2
    assert "inside the input" in _error(capsys)
    assert not (data / "o").exists()
    # the lock: a second run into the directory while the first holds it is refused
    second: list[int] = []
    bench.during_run = lambda: second.append(cli.main([*argv, "--output-dir", str(out)]))
    assert cli.main([*argv, "--output-dir", str(out)]) == 0
    assert second == [2] and "is in use by" in capsys.readouterr().err
    # its declared flags are range-checked; another benchmark's flag is refused
    bench.during_run = None
    assert cli.main([*argv, "--output-dir", str(out), "--dummy-level", "nan"]) == 2
    assert "--dummy-level must be a finite number" in _error(capsys)
    assert cli.main([*argv, "--output-dir", str(out), "--mia-data", str(tmp_path)]) == 2
    assert _error(capsys) == "error: --mia-data is for --benchmark semeval only"
    assert cli.main(["evaluate", "--model", "m", "--output-dir", str(out), "--dummy-level", "0.1"]) == 2
    assert _error(capsys) == "error: --dummy-level is for --benchmark dummy only"


def test_the_library_form_goes_through_the_runner(dummy, tmp_path):
    _, data = dummy
    summary = runner.evaluate(
        tmp_path / "m", benchmark="dummy", output_dir=tmp_path / "o", data=data, level=1.0
    )
    assert summary["headline"] == {"level": 1.0} and (tmp_path / "o" / "dummy.json").is_file()
    with pytest.raises(UserError, match="unknown option levle for benchmark dummy; known: .*level"):
        runner.evaluate("m", benchmark="dummy", output_dir=tmp_path / "o", data=data, levle=1.0)
    with pytest.raises(UserError, match="--benchmark dummy needs --data"):
        runner.evaluate("m", benchmark="dummy", output_dir=tmp_path / "o")


@pytest.mark.parametrize("benchmark, make", [("tofu", make_tofu_dir), ("muse", make_muse_dir)])
def test_tofu_and_muse_get_the_output_policy(benchmark, make, tmp_path, capsys):
    data = make(tmp_path / "data")
    base = ["evaluate", "--benchmark", benchmark, "--model", str(tmp_path / "model"), "--data", str(data)]
    if benchmark == "tofu":
        base += ["--forget-split", "forget01"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "report.md").write_text("my own notes")
    before = _sha(user / "report.md")
    assert cli.main([*base, "--output-dir", str(user)]) == 2
    assert "is not empty" in _error(capsys)
    assert _sha(user / "report.md") == before and sorted(p.name for p in user.iterdir()) == ["report.md"]
    files = {p: _sha(p) for p in data.rglob("*") if p.is_file()}
    assert cli.main([*base, "--output-dir", str(data)]) == 2
    assert "inside the input" in _error(capsys)
    assert {p: _sha(p) for p in data.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--mmlu-threshold", "nan"], "--mmlu-threshold must be a finite number"),
        (["--mmlu-threshold", "1.5"], "--mmlu-threshold must be in [0, 1]"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--min-k-percent", "0"], "--min-k-percent"),
    ],
)
def test_bad_numbers_are_one_error_line(argv, needle, tmp_path, capsys):
    rc = cli.main(["evaluate", "--model", "m", "--data", "d", "--output-dir", str(tmp_path / "o"), *argv])
    assert rc == 2 and needle in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_mmlu_batch_size_zero_is_one_error_line(tmp_path, capsys):
    rc = cli.main(
        ["mmlu", "--model", "m", "--data", "d", "--output-dir", str(tmp_path / "o"), "--batch-size", "0"]
    )
    assert rc == 2 and "--batch-size must be >= 1" in _error(capsys)

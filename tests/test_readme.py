"""Every ```python block of README.md runs, as written, in a directory whose ``data/`` is a small
SemEval-layout dataset (forget.jsonl, retain.jsonl, mia/member.jsonl, mia/nonmember.jsonl: the demo's
synthetic data, fewer people); and the public API it shows (``from llm_unlearn import unlearn,
evaluate, finetune, build_config``) is lazy: ``import llm_unlearn`` loads no torch."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SRC = Path(__file__).resolve().parents[1] / "src"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every ```python block."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2 and all(code.strip() for _, code in BLOCKS)


@pytest.fixture(scope="module")
def readme_data(tmp_path_factory):
    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset

    root = tmp_path_factory.mktemp("readme_data")
    write_synthetic_dataset(make_synthetic_dataset(n_entities_per_task=2, seed=5), root / "data")
    return root / "data"


def _evaluation_runner_missing() -> bool:
    try:
        return importlib.util.find_spec("llm_unlearn.evaluation.run") is None
    except ModuleNotFoundError:
        return True


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line, code, readme_data, tmp_path, monkeypatch):
    if re.search(r"\bevaluate\b", code) and _evaluation_runner_missing():
        pytest.skip(
            "llm_unlearn.evaluation.run (the evaluation runner behind llm_unlearn.evaluate) is absent"
        )
    import shutil

    shutil.copytree(readme_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_block_{line}"})
    assert (tmp_path / "data" / "forget.jsonl").is_file()  # the block's inputs are left alone


# ----------------------------------------------------------------------------- the public API
def _python(code: str) -> str:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_import_is_lazy_and_the_api_names_resolve():
    out = _python(
        "import sys, llm_unlearn\n"
        "print('torch' in sys.modules)\n"
        "from llm_unlearn import build_config, finetune, unlearn\n"
        "import llm_unlearn.api as api\n"
        "print(unlearn is api.unlearn, build_config is api.build_config, callable(finetune))\n"
        "print(sorted(n for n in ('unlearn', 'evaluate', 'finetune', 'build_config') if n in dir(llm_unlearn)))\n"
    )
    assert out.split("\n")[:3] == [
        "False",
        "True True True",
        "['build_config', 'evaluate', 'finetune', 'unlearn']",
    ]
    for name in ("unlearn", "finetune", "build_config"):
        import llm_unlearn.api as api

        assert getattr(api, name).__doc__


def test_evaluate_is_the_evaluation_runner():
    if _evaluation_runner_missing():
        pytest.skip("llm_unlearn.evaluation.run is absent")
    out = _python(
        "from llm_unlearn import evaluate\n"
        "from llm_unlearn.evaluation.run import evaluate as runner\n"
        "print(evaluate is runner)\n"
    )
    assert out.strip() == "True"


def test_finetune_is_callable_whether_or_not_its_package_was_imported(tmp_path):
    """``llm_unlearn.finetune`` is a subpackage too: once imported, Python binds it to the parent's
    attribute; the package is callable with the function's arguments, so both spellings work."""
    import llm_unlearn
    import llm_unlearn.finetune as package
    from llm_unlearn.finetune import FinetuneOptions

    assert llm_unlearn.finetune is package and callable(package)
    with pytest.raises(Exception, match="no data given"):
        package(model="tiny", output_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(Exception, match="no data given"):
        package(FinetuneOptions(output_dir=str(tmp_path / "out"), progress=False))


def test_unlearn_takes_a_config_a_yaml_a_dict_or_keywords(tmp_path, monkeypatch):
    import yaml

    import llm_unlearn.train.loop as loop
    from llm_unlearn import api
    from llm_unlearn.config import build_config
    from llm_unlearn.errors import ConfigError

    seen = []

    def fake_run(cfg, *, model=None, tokenizer=None):
        seen.append((cfg.train.output_dir, cfg.objective.renyi_alpha, cfg.train.learning_rate, model))
        return {"total_steps": 0}

    monkeypatch.setattr(loop, "run_unlearning", fake_run)
    out = str(tmp_path / "x")
    base = {"model.name_or_path": "m", "data.data": "d", "train.output_dir": out}
    default = build_config(overrides=base)
    alpha, lr = default.objective.renyi_alpha, default.train.learning_rate
    assert api.unlearn(base, **{"objective.renyi_alpha": 0.7}) == {"total_steps": 0}
    api.unlearn(default, train__learning_rate=0.01, model="an object")
    api.unlearn(**base, objective__renyi_alpha=0.3)
    yml = tmp_path / "run.yaml"
    yml.write_text(yaml.safe_dump({"model": {"name_or_path": "m"}, "data": {"data": "d"}}))
    api.unlearn(str(yml), train__output_dir=out)
    assert seen == [
        (out, 0.7, lr, None),
        (out, alpha, 0.01, "an object"),
        (out, 0.3, lr, None),
        (out, alpha, lr, None),
    ]
    assert default.train.learning_rate == lr  # a given config is not changed
    with pytest.raises(ConfigError):
        api.unlearn(base, **{"objective.renyi_alpha": -1.0})

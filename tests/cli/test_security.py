"""Security: no model repository code without --trust-remote-code, safetensors only (pickle only with
--allow-pickle), and no secret from the environment or the options in any output or log."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from llm_unlearn import cli

FAST = [
    "--limit",
    "4",
    "--chunk-size",
    "2",
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
    "--no-plots",
    "--no-progress",
]
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle"}


def _train(world, out: Path, *extra: str, model: Path | None = None) -> list[str]:
    return [
        "--quiet",
        "train",
        "--model",
        str(model or world["model_dir"]),
        "--data",
        str(world["data_dir"]),
        "--output-dir",
        str(out),
        *FAST,
        *extra,
    ]


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ----------------------------------------------------------------------------- remote code
def _model_with_custom_code(world, root: Path, model_type: str) -> tuple[Path, Path]:
    """A copy of the tiny model whose config.json points (auto_map) at a module that, when imported,
    writes a marker file."""
    m = root / f"custom_{model_type}"
    shutil.copytree(world["model_dir"], m)
    marker = root / f"EXECUTED_{model_type}"
    (m / "custom_code.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('the repository code ran')\n"
        "from transformers import Olmo2Config, Olmo2ForCausalLM\n"
        f"class CustomConfig(Olmo2Config):\n    model_type = {model_type!r}\n"
        "class CustomModel(Olmo2ForCausalLM):\n    config_class = CustomConfig\n"
    )
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {
        "AutoConfig": "custom_code.CustomConfig",
        "AutoModelForCausalLM": "custom_code.CustomModel",
    }
    (m / "config.json").write_text(json.dumps(cfg))
    return m, marker


def test_custom_code_is_refused_without_trust_remote_code(tiny_world, tmp_path, capsys):
    model, marker = _model_with_custom_code(tiny_world, tmp_path, "custom-olmo")
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out, model=model)) == 2
    line = _error_line(capsys)
    assert "--trust-remote-code" in line and "Traceback" not in line
    assert not marker.exists() and not out.exists()
    # the other commands refuse it the same way
    assert (
        cli.main(
            [
                "--quiet",
                "merge",
                "--model",
                str(model),
                "--adapter",
                str(tmp_path / "adapter"),
                "--output-dir",
                str(tmp_path / "merged"),
            ]
        )
        == 2
    )
    assert "--trust-remote-code" in _error_line(capsys)
    assert not marker.exists()


def test_custom_code_of_a_known_architecture_is_not_run(tiny_world, tmp_path):
    """config.json names a known model type *and* custom code: the library's own class is used."""
    model, marker = _model_with_custom_code(tiny_world, tmp_path, "olmo2")
    assert cli.main(_train(tiny_world, tmp_path / "out", "--no-merge", model=model)) == 0
    assert not marker.exists()


def test_custom_code_runs_with_trust_remote_code(tiny_world, tmp_path, monkeypatch):
    """The positive control: the marker module is real, and the flag does let it run."""
    import transformers.dynamic_module_utils as dmu

    model, marker = _model_with_custom_code(tiny_world, tmp_path, "custom-olmo")
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not the user's cache
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    try:
        from llm_unlearn.modeling import load_model

        load_model(str(model), trust_remote_code=True)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("transformers_modules"):
                del sys.modules[name]
    assert marker.read_text() == "the repository code ran"


# ----------------------------------------------------------------------------- safetensors only
def _files_with_suffix(path: Path, suffixes: set[str]) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)


def test_outputs_are_safetensors_only(tiny_world, tmp_path):
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out)) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    assert _files_with_suffix(out, PICKLE_SUFFIXES) == []
    merged = tmp_path / "merged"
    assert (
        cli.main(
            [
                "--quiet",
                "merge",
                "--model",
                str(tiny_world["model_dir"]),
                "--adapter",
                str(out / "adapter"),
                "--output-dir",
                str(merged),
            ]
        )
        == 0
    )
    assert (merged / "model.safetensors").is_file() and _files_with_suffix(merged, PICKLE_SUFFIXES) == []


@pytest.fixture
def pickle_model(tiny_world, tmp_path) -> Path:
    m = tmp_path / "pickle_model"
    shutil.copytree(tiny_world["model_dir"], m)
    from safetensors.torch import load_file

    torch.save(load_file(str(m / "model.safetensors")), m / "pytorch_model.bin")
    (m / "model.safetensors").unlink()
    return m


def test_pickle_weights_are_refused_unless_allowed(tiny_world, tmp_path, pickle_model, capsys):
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out, model=pickle_model)) == 2
    line = _error_line(capsys)
    assert "pickle" in line and "--allow-pickle" in line and "pytorch_model.bin" in line
    assert not out.exists()
    assert cli.main(_train(tiny_world, out, "--allow-pickle", "--no-merge", model=pickle_model)) == 0
    assert _files_with_suffix(out, PICKLE_SUFFIXES) == []  # what we write is still safetensors


def test_a_pickle_adapter_is_refused_unless_allowed(tiny_world, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"not really a pickle")
    assert (
        cli.main(
            [
                "--quiet",
                "merge",
                "--model",
                str(tiny_world["model_dir"]),
                "--adapter",
                str(adapter),
                "--output-dir",
                str(tmp_path / "merged"),
            ]
        )
        == 2
    )
    assert "--allow-pickle" in _error_line(capsys)


# ----------------------------------------------------------------------------- secrets
SECRETS = {
    "HF_TOKEN": "hf_SeCrEtFromTheEnvironment0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_AnotherEnvSecret9876543210abcdef",
    "WANDB_API_KEY": "wandbsecret0123456789abcdef0123456789",
}
OPTION_SECRET = "hf_PassedAsAnOption0000111122223333"


def _leaks(path: Path, texts: list[str]) -> list[str]:
    found = []
    for p in [q for q in path.rglob("*") if q.is_file()]:
        data = p.read_bytes()
        found += [f"{p.relative_to(path)}: {s[:8]}..." for s in texts if s.encode() in data]
    return found


def test_no_secret_in_outputs_checkpoints_or_logs(tiny_world, tmp_path, monkeypatch, capsys, caplog):
    import llm_unlearn.train.checkpoint as run_mod

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    secrets = [*SECRETS.values(), OPTION_SECRET]
    out = tmp_path / "out"
    argv = _train(tiny_world, out, "--training-arg", f"hub_token={OPTION_SECRET}")
    argv[0] = "--debug"  # the most verbose logs

    class Stop(Exception):
        pass

    real_save = run_mod.save_checkpoint

    def save_then_stop(o, *a, **k):
        real_save(o, *a, **k)
        raise Stop

    monkeypatch.setattr(run_mod, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        cli.main(argv)
    assert (out / "checkpoint" / "state.json").is_file()
    assert _leaks(out, secrets) == []
    monkeypatch.setattr(run_mod, "save_checkpoint", real_save)
    assert cli.main(argv) == 0  # resumes: the redacted token does not change the configuration
    assert json.loads((out / "run.json").read_text())["config"]["training_args"]["hub_token"] == "<redacted>"
    assert _leaks(out, secrets) == []
    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert not [s for s in secrets if s in logs]

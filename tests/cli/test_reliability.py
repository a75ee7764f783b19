"""Reliability: the output-directory policy of every subcommand, the directory lock, the data+config
fingerprint, adapter/base compatibility, the error boundary, signals outside training, evaluation
sanity checks."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_unlearn import cli
from llm_unlearn.errors import UserError
from llm_unlearn.outputs import DirectoryLock, check_output_file, prepare_output_dir, read_marker


def _train(world, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    return [
        "--quiet",
        "train",
        "--model",
        str(world["model_dir"]),
        "--data",
        str(data or world["data_dir"]),
        "--output-dir",
        str(out),
        "--limit",
        "6",
        "--chunk-size",
        "3",
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
        "--no-progress",
        "--no-plots",
        "--no-merge",
        *extra,
    ]


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (hidden ones too): 'byte-identical' made checkable."""
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def finished(tiny_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "run"
    assert cli.main(_train(tiny_world, out)) == 0
    return out


# ----------------------------------------------------------------------------- the policy, as a function
def test_prepare_output_dir_rules(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget.jsonl").write_text("{}\n")
    # inside, equal to, or holding an input
    for bad in (data, data / "sub", tmp_path):
        with pytest.raises(UserError, match="input"):
            prepare_output_dir(bad, "evaluate", [data])
    # a user's directory
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and was not written by `llm-unlearn evaluate`"):
        prepare_output_dir(user, "evaluate")
    prepare_output_dir(user, "evaluate", overwrite=True)  # allowed; the caller keeps notes.txt
    assert (user / "notes.txt").read_text() == "mine"
    # our own output of the same kind is fine, another kind is not
    ours = prepare_output_dir(tmp_path / "ev", "evaluate")
    (ours / "report.md").write_text("x")
    prepare_output_dir(ours, "evaluate")
    with pytest.raises(UserError, match="`llm-unlearn evaluate`, not of `mmlu`"):
        prepare_output_dir(ours, "mmlu")
    # a directory without marker whose files merely carry our output names is the user's (issue 18):
    # refused, and with --overwrite the same-named file is still never replaced
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="metrics.json"):
            prepare_output_dir(
                legacy, "mmlu", own_names=("metrics.json", "predictions.jsonl"), overwrite=overwrite
            )
    assert read_marker(legacy) is None and (legacy / "metrics.json").read_text() == "{}"
    # check only: nothing created
    prepare_output_dir(tmp_path / "new", "train", create=False)
    assert not (tmp_path / "new").exists()


def test_check_output_file_rules(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="input"):
        check_output_file(data / "forget.jsonl", [data])
    with pytest.raises(UserError, match="input"):
        check_output_file(data / "x.md", [data])
    user = tmp_path / "notes.md"
    user.write_text("my notes")
    with pytest.raises(UserError, match="not written by llm-unlearn"):
        check_output_file(user, [data], signature="# Sample generations")
    check_output_file(user, [data], overwrite=True)
    user.write_text("# Sample generations\n...")
    check_output_file(user, [data], signature="# Sample generations")


# ----------------------------------------------------------------------------- the policy, per subcommand
def test_train_refuses_a_users_directory_and_overwrite_keeps_the_users_files(tiny_world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert cli.main(_train(tiny_world, out)) == 2
    assert "not empty and was not written by `llm-unlearn train`" in _err(capsys)[0]
    assert cli.main(_train(tiny_world, out, "--overwrite")) == 0
    assert (out / "thesis.tex").read_text() == "precious"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and read_marker(out)["kind"] == "train"
    # inside the data, or holding the model: refused, the inputs untouched
    before = _tree_digest(tiny_world["data_dir"])
    assert cli.main(_train(tiny_world, tiny_world["data_dir"] / "out")) == 2
    assert "inside the input" in _err(capsys)[0]
    assert _tree_digest(tiny_world["data_dir"]) == before


def test_merge_never_deletes_user_files(tiny_world, finished, tmp_path, capsys):
    adapter = finished / "adapter"
    before = _tree_digest(adapter)
    # the adapter's own directory (the reported bug: it replaced the adapter)
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
                str(adapter),
            ]
        )
        == 2
    )
    assert "inside the input" in _err(capsys)[0]
    # the train run's directory (holds the adapter)
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
                str(finished),
            ]
        )
        == 2
    )
    assert "contains the input" in _err(capsys)[0]
    assert _tree_digest(adapter) == before
    # a user's directory: refused; with --overwrite the user's file stays
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    argv = [
        "--quiet",
        "merge",
        "--model",
        str(tiny_world["model_dir"]),
        "--adapter",
        str(adapter),
        "--output-dir",
        str(user),
    ]
    assert cli.main(argv) == 2
    assert "not empty" in _err(capsys)[0]
    assert cli.main([*argv, "--overwrite"]) == 0
    assert (user / "keep.txt").read_text() == "mine" and (user / "model.safetensors").is_file()
    # the manifest names only what merge wrote; the user's file is not in it
    written = read_marker(user)["written"]
    assert "model.safetensors" in written and "keep.txt" not in written
    # our own merge output: replaced as a whole, again and again
    mine = tmp_path / "merged"
    for _ in range(2):
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
                    str(mine),
                ]
            )
            == 0
        )
        assert read_marker(mine)["kind"] == "merge"
    assert not list(tmp_path.glob(".*lock"))  # the lock beside it is gone


def test_sample_never_writes_over_the_data_or_a_users_file(tiny_world, finished, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_world["data_dir"], data)
    before = _tree_digest(data)
    base = [
        "--quiet",
        "sample",
        "--model",
        str(tiny_world["model_dir"]),
        "--adapter",
        str(finished / "adapter"),
        "--data",
        str(data),
        "--max-new-tokens",
        "4",
        "--no-progress",
    ]
    assert cli.main([*base, "--output", str(data / "forget.md")]) == 2  # forget.jsonl is the input
    assert "inside the input" in _err(capsys)[0]
    notes = tmp_path / "notes.md"
    notes.write_text("my notes")
    assert cli.main([*base, "--output", str(notes)]) == 2
    assert "not written by llm-unlearn" in _err(capsys)[0]
    assert notes.read_text() == "my notes" and _tree_digest(data) == before
    out = tmp_path / "s.md"
    assert cli.main([*base, "--output", str(out)]) == 0
    assert cli.main([*base, "--output", str(out)]) == 0  # our own file: replaced
    assert _tree_digest(data) == before


def test_evaluate_and_mmlu_refuse_other_kinds_and_inputs(tiny_world, finished, tmp_path, capsys):
    ev = [
        "--quiet",
        "evaluate",
        "--model",
        str(tiny_world["model_dir"]),
        "--data",
        str(tiny_world["data_dir"]),
        "--no-progress",
    ]
    assert cli.main([*ev, "--output-dir", str(finished)]) == 2  # a train run's directory
    assert "`llm-unlearn train`, not of `evaluate`" in _err(capsys)[0]
    assert cli.main([*ev, "--output-dir", str(tiny_world["model_dir"] / "eval")]) == 2
    assert "inside the input" in _err(capsys)[0]
    assert (
        cli.main(
            [
                "--quiet",
                "mmlu",
                "--model",
                str(tiny_world["model_dir"]),
                "--data",
                str(tmp_path / "none"),
                "--output-dir",
                str(finished),
            ]
        )
        == 2
    )
    assert len(_err(capsys)) == 1


def test_demo_refuses_a_users_directory(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("mine")
    assert cli.main(["--quiet", "demo", "--output-dir", str(tmp_path)]) == 2
    assert "not written by `llm-unlearn demo`" in _err(capsys)[0]


# ----------------------------------------------------------------------------- the lock
_HOLDER = textwrap.dedent("""
    import sys, time
    from llm_unlearn.outputs import DirectoryLock
    lock = DirectoryLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_names_the_other_process_and_a_killed_holder_leaves_no_stale_lock(tiny_world, tmp_path, capsys):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(_train(tiny_world, out)) == 2
        line = _err(capsys)[0]
        assert f"pid {holder.pid} on host {os.uname().nodename}" in line and "in use" in line
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock file stays, the kernel's lock does not
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert (out / ".llm-unlearn.lock").exists()
    assert cli.main(_train(tiny_world, out)) == 0
    assert not (out / ".llm-unlearn.lock").exists()


def test_lock_in_one_process(tmp_path):
    a = DirectoryLock(tmp_path).acquire()
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    a.release()
    with DirectoryLock(tmp_path):
        pass


# ----------------------------------------------------------------------------- the fingerprint
def test_changed_data_is_refused_for_a_finished_run_and_for_a_resume(tiny_world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_world["data_dir"], data)
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out, data=data)) == 0
    run = json.loads((out / "run.json").read_text())
    assert set(run["data_sha256"]) >= {"forget.jsonl", "retain.jsonl"}
    assert cli.main(_train(tiny_world, out, data=data)) == 0  # same inputs: "nothing to do"
    # the data changes: refused, saying what changed and how to start over
    forget = data / "forget.jsonl"
    forget.write_text(forget.read_text().replace("a", "b", 1))
    assert cli.main(_train(tiny_world, out, data=data)) == 2
    (line,) = _err(capsys)
    assert "data file forget.jsonl changed" in line and "--overwrite" in line
    # an option changes: named with old and new value
    assert cli.main(_train(tiny_world, out, "--lr", "3e-4", data=data)) == 2
    assert "train.learning_rate: 0.0001 -> 0.0003" in _err(capsys)[0]
    # a checkpoint (as a kill leaves it) with other data: no resume
    ckpt = out / "checkpoint"
    ckpt.mkdir()
    state = {
        "config": run["config"],
        "data_sha256": {**run["data_sha256"], "retain.jsonl": "0" * 64},
        "completed_chunks": 1,
        "log_history": [],
        "chunks": [],
    }
    (ckpt / "state.json").write_text(json.dumps(state))
    assert cli.main(_train(tiny_world, out, data=data)) == 2
    assert "data file retain.jsonl changed" in _err(capsys)[0]
    assert cli.main(_train(tiny_world, out, "--overwrite", data=data)) == 0
    assert (
        json.loads((out / "run.json").read_text())["data_sha256"]["forget.jsonl"]
        != run["data_sha256"]["forget.jsonl"]
    )


# ----------------------------------------------------------------------------- adapter / base compatibility
def _adapter_for(world, tmp_path, name: str, **shape) -> Path:
    from llm_unlearn.modeling import apply_lora
    from llm_unlearn.tiny import build_tiny_olmo2

    model = build_tiny_olmo2(world["tokenizer"], **shape)
    peft = apply_lora(model, r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    peft.save_pretrained(tmp_path / name, safe_serialization=True)
    return tmp_path / name


@pytest.mark.parametrize(
    "shape,expect",
    [
        ({"hidden_size": 64, "num_layers": 3}, "layer 2, the model 2 layers"),
        ({"hidden_size": 32, "num_layers": 2}, "has shape"),
    ],
)
def test_an_adapter_for_another_model_is_refused_by_merge_and_evaluate(
    tiny_world, tmp_path, capsys, shape, expect
):
    adapter = _adapter_for(tiny_world, tmp_path, "adapter", **shape)
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
    (line,) = _err(capsys)
    assert expect in line and "does not fit" in line
    assert not (tmp_path / "merged").exists()
    assert (
        cli.main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(tiny_world["model_dir"]),
                "--adapter",
                str(adapter),
                "--data",
                str(tiny_world["data_dir"]),
                "--output-dir",
                str(tmp_path / "ev"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert expect in _err(capsys)[0]


def test_a_truncated_adapter_is_one_line(tiny_world, finished, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(finished / "adapter", adapter)
    f = adapter / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:50])
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
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    (line,) = _err(capsys)
    assert "corrupt or truncated" in line


# ----------------------------------------------------------------------------- the error boundary
def _boundary_cases():
    import torch
    from safetensors import SafetensorError

    return [
        (
            SafetensorError(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                '"No space left on device" })'
            ),
            "disk full",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (PermissionError(errno.EACCES, "Permission denied", "/x"), "permission denied"),
        (
            SafetensorError("Error while deserializing header: MetadataIncompleteBuffer"),
            "corrupt or truncated",
        ),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "--batch-size"),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            "gradient_checkpointing",
        ),
        (AssertionError("Torch not compiled with CUDA enabled"), "--device cpu"),
        (RuntimeError("No CUDA GPUs are available"), "--device cpu"),
    ]


def test_known_failures_become_one_line_and_debug_keeps_the_traceback(monkeypatch, capsys):
    import llm_unlearn.cli.demo as cli_mod

    cases = _boundary_cases()
    for exc, expect in cases:

        def fail(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli_mod, "cmd_demo", fail)
        assert cli.main(["demo", "--output-dir", "unused"]) == 1
        (line,) = _err(capsys)
        assert line.startswith("error: ") and expect in line, (exc, line)
        with pytest.raises(type(exc)):
            cli.main(["--debug", "demo", "--output-dir", "unused"])

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli_mod, "cmd_demo", bug)
    with pytest.raises(ZeroDivisionError):  # an unknown failure keeps its traceback
        cli.main(["demo", "--output-dir", "unused"])
    print(f"error boundary: {len(cases)} failure kinds")


def test_disk_full_in_safetensors_during_a_run_is_one_line(tiny_world, tmp_path, monkeypatch, capsys):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
            '"No space left on device" })'
        )

    import peft.peft_model

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", full)  # PEFT's own reference to it
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out)) == 1
    (line,) = _err(capsys)
    assert line.startswith("error: disk full")
    assert not list(out.glob(".*.tmp")) and not (out / "adapter").exists()


# ----------------------------------------------------------------------------- signals and leftovers
def test_stale_tmp_dirs_are_removed_at_the_next_start(tiny_world, tmp_path):
    out = tmp_path / "out"
    assert cli.main(_train(tiny_world, out)) == 0
    from llm_unlearn.io_utils import TMP_PREFIX

    half = out / f"{TMP_PREFIX}999999.abc123.checkpoint"  # what a killed process (pid 999999) left
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"half")
    (out / f"{TMP_PREFIX}999999.xyz.run.json").write_text("{")
    (out / ".notes.tmp").write_text("the user's")  # not the tool's name: never touched
    assert cli.main(_train(tiny_world, out)) == 0
    assert not list(out.glob(f"{TMP_PREFIX}*")) and (out / ".notes.tmp").read_text() == "the user's"


# ----------------------------------------------------------------------------- evaluation sanity
def test_overlapping_or_one_sided_mia_sets_are_refused_before_the_model_loads(tiny_world, tmp_path, capsys):
    mia = tmp_path / "mia"
    mia.mkdir()
    doc = {"id": "d1", "document": "Alice wrote it in Paris."}
    (mia / "member.jsonl").write_text(
        json.dumps(doc) + "\n" + json.dumps({"id": "d2", "document": "x y"}) + "\n"
    )
    (mia / "nonmember.jsonl").write_text(json.dumps({**doc, "id": "d3"}) + "\n")
    t0 = time.time()
    assert (
        cli.main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(tmp_path / "no-model"),
                "--data",
                str(tiny_world["data_dir"]),
                "--mia-data",
                str(mia),
                "--output-dir",
                str(tmp_path / "ev"),
            ]
        )
        == 2
    )
    (line,) = _err(capsys)
    assert "overlap" in line and time.time() - t0 < 60


def test_small_tasks_and_missing_splits_are_warned_in_report_md(tiny_world, tmp_path):
    from llm_unlearn.data.records import load_unlearning_data, read_mia_documents
    from llm_unlearn.evaluation.benchmarks.semeval.evaluate import evaluate_semeval

    bundle = load_unlearning_data(tiny_world["data_dir"])
    bundle.retain = []
    members, nonmembers = read_mia_documents(tiny_world["data_dir"] / "mia")
    res = evaluate_semeval(
        tiny_world["make_model"](),
        tiny_world["tokenizer"],
        bundle,
        mia=(members[:3], nonmembers[:3]),
        max_new_tokens=2,
        output_dir=tmp_path,
        progress=False,
    )
    text = (tmp_path / "report.md").read_text()
    for needle in ("retain split is missing", "fewer than 5 items", "fewer than 10 a side"):
        assert any(needle in w for w in res["warnings"]), (needle, res["warnings"])
        assert needle in text


def test_cuda_asked_for_on_a_machine_without_it_is_one_line(tiny_world, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert (
        cli.main(
            [
                "--quiet",
                "evaluate",
                "--model",
                str(tiny_world["model_dir"]),
                "--device",
                "cuda",
                "--data",
                str(tiny_world["data_dir"]),
                "--output-dir",
                str(tmp_path / "ev"),
            ]
        )
        == 2
    )
    (line,) = _err(capsys)
    assert "CUDA is not usable here" in line and "--device cpu" in line


def test_sigterm_during_merge_exits_3_and_leaves_no_output(
    tiny_world, finished, tmp_path, monkeypatch, capsys
):
    import llm_unlearn.io_utils as io_utils

    real = io_utils.atomic_dir

    def signalled(path, fill):  # the signal arrives while the merged model is being written
        def fill_then_signal(tmp):
            fill(tmp)
            os.kill(os.getpid(), signal.SIGTERM)

        return real(path, fill_then_signal)

    monkeypatch.setattr(io_utils, "atomic_dir", signalled)
    out = tmp_path / "merged"
    assert (
        cli.main(
            [
                "--quiet",
                "merge",
                "--model",
                str(tiny_world["model_dir"]),
                "--adapter",
                str(finished / "adapter"),
                "--output-dir",
                str(out),
            ]
        )
        == 3
    )
    (line,) = _err(capsys)
    assert line.startswith("stopped: interrupted by signal 15") and "Run the same command again" in line
    assert not out.exists() and not list(tmp_path.glob(".*"))  # no half model, no tmp, no lock left


# ----------------------------------------------------------------------------- an adapter knows its base
def test_merge_and_evaluate_refuse_an_adapter_of_another_base_of_the_same_shapes(
    tiny_world, finished, tmp_path, capsys
):
    """train records the base model in adapter/llm_unlearn_base.json; the same architecture with other
    weights is refused (one line, exit 2) unless --force (issue 18, class 8)."""
    import torch

    from llm_unlearn.adapter import BASE_FILE

    assert (finished / "adapter" / BASE_FILE).is_file()
    other = tiny_world["make_model"]()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.01)
    other.save_pretrained(tmp_path / "other", safe_serialization=True)
    tiny_world["tokenizer"].save_pretrained(tmp_path / "other")
    argv = ["--quiet", "merge", "--model", str(tmp_path / "other"), "--adapter", str(finished / "adapter")]
    assert cli.main([*argv, "--output-dir", str(tmp_path / "m1")]) == 2
    (line,) = _err(capsys)
    assert "trained on another base model" in line and "--force" in line
    assert not (tmp_path / "m1").exists()
    assert cli.main([*argv, "--output-dir", str(tmp_path / "m2"), "--force"]) == 0
    assert (tmp_path / "m2" / "model.safetensors").is_file()
    # its own base: no --force needed
    own = [
        "--quiet",
        "merge",
        "--model",
        str(tiny_world["model_dir"]),
        "--adapter",
        str(finished / "adapter"),
    ]
    assert cli.main([*own, "--output-dir", str(tmp_path / "m3")]) == 0


def test_train_never_writes_inside_its_config_or_alternatives_file_directory(tiny_world, tmp_path, capsys):
    """Every input flag is an input of the output policy: a --config file or an --alternatives file
    inside the output directory is refused before anything is written (issue 18)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "cfg.yaml").write_text("train:\n  learning_rate: 0.001\n")
    assert cli.main([*_train(tiny_world, out), "--config", str(out / "cfg.yaml")]) == 2
    assert "contains the input" in _err(capsys)[0]
    alts = out / "alts.txt"
    (out / "cfg.yaml").unlink()
    alts.write_text("I don't know.\n")
    assert cli.main([*_train(tiny_world, out), "--method", "idk_dpo", "--alternatives", str(alts)]) == 2
    assert "contains the input" in _err(capsys)[0]
    assert sorted(p.name for p in out.iterdir()) == ["alts.txt"]

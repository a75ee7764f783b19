"""The adapter knows its base model, and every file a user gives is one clear line when it is wrong
(issue 18 classes 5 and 8)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_lora_model
from llm_unlearn.adapter import BASE_FILE, attach_adapter, base_fingerprint, write_base_fingerprint
from llm_unlearn.errors import UserError
from llm_unlearn.modeling import check_tokenizer_fits, load_model


def _save_adapter(world, path):
    pm = make_lora_model(world)
    pm.save_pretrained(path)
    write_base_fingerprint(path, pm, "tiny")
    return pm


def test_the_fingerprint_does_not_depend_on_the_loaded_dtype(tiny_world):
    m = tiny_world["make_model"]()
    fp32 = base_fingerprint(m)
    m16 = tiny_world["make_model"]().to(torch.bfloat16)
    assert base_fingerprint(m16.to(torch.float32)) == base_fingerprint(m16)
    assert fp32["embedding_sha256"] and fp32["num_hidden_layers"] == 2


def test_an_adapter_on_another_base_of_the_same_shapes_is_refused(tiny_world, tmp_path):
    _save_adapter(tiny_world, tmp_path / "a")
    assert json.loads((tmp_path / "a" / BASE_FILE).read_text())["base_model"] == "tiny"
    attach_adapter(tiny_world["make_model"](), str(tmp_path / "a"))  # its own base: fine
    other = tiny_world["make_model"]()
    with torch.no_grad():  # same architecture and shapes, other weights
        other.get_input_embeddings().weight.add_(0.01)
    with pytest.raises(UserError, match="trained on another base model .*embedding_sha256 differs"):
        attach_adapter(other, str(tmp_path / "a"))
    attach_adapter(other, str(tmp_path / "a"), force=True)  # --force: used, with a warning


def test_an_adapter_config_without_peft_type_is_one_line(tiny_world, tmp_path):
    _save_adapter(tiny_world, tmp_path / "a")
    cfg = tmp_path / "a" / "adapter_config.json"
    data = json.loads(cfg.read_text())
    del data["peft_type"]
    cfg.write_text(json.dumps(data))
    with pytest.raises(UserError, match="without a 'peft_type' field"):
        attach_adapter(tiny_world["make_model"](), str(tmp_path / "a"))
    cfg.write_text("[1, 2]")
    with pytest.raises(UserError, match="got a JSON list"):
        attach_adapter(tiny_world["make_model"](), str(tmp_path / "a"))


@pytest.mark.parametrize(
    "content, needle", [("[1]", "got a JSON list"), ("{", "not valid JSON"), (b"\xff", "UTF-8")]
)
def test_a_model_config_that_is_not_an_object_is_one_line(tiny_world, tmp_path, content, needle):
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(tiny_world["model_dir"], model_dir)
    target = model_dir / "config.json"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=needle) as e:
        load_model(str(model_dir), device="cpu")
    assert "\n" not in str(e.value)


def test_a_tokenizer_with_more_tokens_than_embedding_rows_is_refused(tiny_world):
    from llm_unlearn.tiny import train_bpe_tokenizer

    model = tiny_world["make_model"]()
    check_tokenizer_fits(model, tiny_world["tokenizer"])
    texts = [d if isinstance(d, str) else d["document"] for d in tiny_world["ds"].documents]
    texts += [str(r) for r in tiny_world["ds"].forget + tiny_world["ds"].retain]
    big = train_bpe_tokenizer(texts, vocab_size=2048)
    assert len(big) > model.get_input_embeddings().num_embeddings
    with pytest.raises(UserError, match="belongs to another model"):
        check_tokenizer_fits(model, big, "other-tok")


def test_blank_mia_documents_are_refused_with_file_and_line(tmp_path):
    from llm_unlearn.data.records import read_mia_documents

    (tmp_path / "member.jsonl").write_text('{"id": "1", "document": "text"}\n{"id": "2", "document": "  "}\n')
    (tmp_path / "nonmember.jsonl").write_text('{"id": "3", "document": "x"}\n')
    with pytest.raises(
        UserError, match=r"member.jsonl, line 2, field 'document': the document is empty or blank"
    ):
        read_mia_documents(tmp_path)

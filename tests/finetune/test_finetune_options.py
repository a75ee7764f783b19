"""finetune's options (declared once, shared ones are train's), its generated flags, the batchings of
the one memorization trainer, and that trainer against independent loops: the demo's old
``train_target_model`` and eval_bench's old ``memorize``, written out here as oracles (bit-identical
weights on the CPU: same operations in the same order)."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch

from llm_unlearn.config.options import DataOptions, LoraOptions, ModelOptions, TrainOptions
from llm_unlearn.finetune import FinetuneOptions, memorize, memorize_tiny
from llm_unlearn.finetune.loop import LoopSettings, epoch_batches

OLD_FLAGS = {  # every flag `finetune` had before its flags were generated
    "--model", "--gguf-file", "--tokenizer", "--data", "--split", "--forget", "--retain", "--records",
    "--documents", "--limit", "--output-dir", "--method", "--epochs", "--max-steps", "--until-em",
    "--eval-items", "--eval-every", "--lr", "--batch-size", "--max-length", "--max-batch-tokens",
    "--lora-r", "--lora-alpha", "--tiny-hidden", "--tiny-layers", "--vocab-size", "--joiner", "--dtype",
    "--seed", "--overwrite", "--no-progress", "--trust-remote-code", "--allow-pickle",
}  # fmt: skip


def _parser():
    from llm_unlearn.cli import build_parser

    return build_parser()


def _finetune_flags() -> set[str]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s for a in sub.choices["finetune"]._actions for s in a.option_strings} - {"-h", "--help"}


def test_every_old_flag_is_generated_from_the_declarations():
    declared = {
        f.metadata.get("flag") or (f.metadata.get("switch") or [None])[0]
        for f in dataclasses.fields(FinetuneOptions)
    }
    assert _finetune_flags() == OLD_FLAGS == declared - {None}


@pytest.mark.parametrize(
    "name, cls, field",
    [
        ("lora_r", LoraOptions, "r"),
        ("lora_alpha", LoraOptions, "alpha"),
        ("max_length", DataOptions, "max_length"),
        ("limit", DataOptions, "limit"),
        ("joiner", DataOptions, "joiner"),
        ("tokenizer", ModelOptions, "tokenizer"),
        ("trust_remote_code", ModelOptions, "trust_remote_code"),
        ("allow_pickle", ModelOptions, "allow_pickle"),
        ("output_dir", TrainOptions, "output_dir"),
        ("progress", TrainOptions, "progress"),
        ("overwrite", TrainOptions, "overwrite"),
    ],
)
def test_shared_options_are_trains_declarations(name, cls, field):
    ours = {f.name: f for f in dataclasses.fields(FinetuneOptions)}[name]
    theirs = {f.name: f for f in dataclasses.fields(cls)}[field]
    assert ours.default == theirs.default
    for key in ("flag", "switch", "choices", "range", "path"):
        assert ours.metadata[key] == theirs.metadata[key], key
    assert FinetuneOptions().lora_alpha == LoraOptions().alpha == 64


def test_flags_parse_repeat_and_check(tmp_path):
    from llm_unlearn.config.declare import read_flags
    from llm_unlearn.errors import UserError

    base = ["finetune", "--model", "tiny", "--output-dir", str(tmp_path)]
    args = _parser().parse_args(
        base + ["--records", "a", "--records", "b", "c", "--no-progress", "--lr", "0.01"]
    )
    o = read_flags(args, FinetuneOptions)
    assert o.records == ["a", "b", "c"] and o.progress is False and o.lr == 0.01 and o.documents == []
    assert o.lora_alpha == 64 and o.batch_size == 16 and o.seed == 0 and o.batching == "buckets"
    for argv, needle in (
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--lora-alpha", "0"], "--lora-alpha must be >= 1"),
        (["--until-em", "2"], "--until-em must be in (0, 1]"),
        (["--seed", "-1"], "--seed must be in [0"),
    ):
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
            read_flags(_parser().parse_args(base + argv), FinetuneOptions)


def test_library_paths_and_tuples_become_the_declared_types(tmp_path):
    o = FinetuneOptions(data=tmp_path, documents=(tmp_path / "d.jsonl",), records=None)
    assert o.data == str(tmp_path) and o.documents == [str(tmp_path / "d.jsonl")] and o.records == []


@pytest.mark.parametrize("batching", ["buckets", "shuffle", "sorted"])
def test_every_item_is_in_one_batch_of_every_epoch(batching):
    lengths = [5, 3, 9, 3, 7, 1, 4, 8, 2, 6, 5]
    s = LoopSettings(4, None, 3, None, None, None, 1, False, torch.device("cpu"), 0, False, batching=batching)
    gen = torch.Generator().manual_seed(3)
    first = epoch_batches(lengths, s, 1, gen)
    for epoch in (1, 2, 3):
        batches = first if epoch == 1 else epoch_batches(lengths, s, epoch, gen)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert max(map(len, batches)) <= 4 and len(batches) == math.ceil(len(lengths) / 4)
    if batching == "sorted":  # the same batches, in another order
        assert sorted(map(sorted, first)) == sorted(map(sorted, batches))


# ----------------------------------------------------------------------------- oracles
def _old_demo_trainer(texts, tok, hidden, layers, steps, lr, batch_size, seed):
    """demo.train_target_model as it was (min_steps == steps): padded once, a permutation per epoch."""
    from llm_unlearn.data.batching import IGNORE_INDEX, pad_batch
    from llm_unlearn.tiny import build_tiny_olmo2

    torch.manual_seed(seed)
    model = build_tiny_olmo2(tok, hidden_size=hidden, num_layers=layers, seed=seed)
    enc = [tok(t).input_ids + [tok.eos_token_id] for t in texts]
    ids, mask = pad_batch(enc, tok.pad_token_id, side="right")
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps)
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    step, losses = 0, []
    while step < steps:
        perm, losses = torch.randperm(len(enc), generator=g), []
        for b in range(math.ceil(len(enc) / batch_size)):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            out = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            step += 1
            if step >= steps:
                break
    return model, sum(losses) / len(losses)


def _old_eval_bench_trainer(model, seqs, starts, pad_id, epochs, lr, batch_size, seed):
    """benchmarks/eval_bench.py memorize as it was: length-sorted batches, their order permuted."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    total = epochs * len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * max(0.05, 1 - s / total)
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for bi in torch.randperm(len(batches), generator=g).tolist():
            b = batches[bi]
            w = max(len(seqs[i]) for i in b)
            ids = torch.full((len(b), w), pad_id, dtype=torch.long)
            labels = torch.full((len(b), w), -100, dtype=torch.long)
            for r, i in enumerate(b):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                labels[r, starts[i] : len(seqs[i])] = torch.tensor(seqs[i][starts[i] :])
            mask = torch.arange(w)[None] < torch.tensor([len(seqs[i]) for i in b])[:, None]
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return model


@pytest.fixture(scope="module")
def texts_and_tokenizer():
    from llm_unlearn.data.synthetic import make_synthetic_dataset
    from llm_unlearn.demo import memorization_texts
    from llm_unlearn.tiny import train_bpe_tokenizer

    ds = make_synthetic_dataset(n_entities_per_task=2, seed=2)
    texts = memorization_texts(ds.forget + ds.retain, ds.documents)
    return texts, train_bpe_tokenizer(texts, vocab_size=300), ds


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_demos_memorization_is_the_old_trainers_bit_for_bit(texts_and_tokenizer):
    from llm_unlearn.demo import MEMORIZATION

    texts, tok, _ = texts_and_tokenizer
    steps = 2 * math.ceil(len(texts) / 8) + 3  # two epochs and part of a third
    old, old_loss = _old_demo_trainer(texts, tok, 32, 1, steps, 5e-3, 8, seed=4)
    opts = {**MEMORIZATION, "batch_size": 8}
    new, info = memorize_tiny(
        texts, tok, **opts, tiny_hidden=32, tiny_layers=1, tiny_intermediate=512, max_steps=steps, lr=5e-3, seed=4,
        progress=False,
    )  # fmt: skip
    assert info["steps"] == steps and info["stopped"] == "max_steps"
    assert _same_weights(old, new) and info["final_epoch_loss"] == old_loss


def test_eval_benchs_memorization_is_the_old_trainers_bit_for_bit(texts_and_tokenizer):
    from llm_unlearn.tiny import build_tiny_olmo2

    _, tok, ds = texts_and_tokenizer
    seqs, starts = [], []
    for r in ds.forget + ds.retain:
        prompt = list(tok(r["input"]).input_ids)
        seqs.append(prompt + list(tok(r["output"], add_special_tokens=False).input_ids) + [tok.eos_token_id])
        starts.append(len(prompt))
    a = build_tiny_olmo2(tok, hidden_size=32, num_layers=1, seed=6)
    b = build_tiny_olmo2(tok, hidden_size=32, num_layers=1, seed=6)
    _old_eval_bench_trainer(a, seqs, starts, tok.pad_token_id, 3, 2e-3, 4, seed=1)
    info = memorize(
        b, tok, seqs, label_from=starts, epochs=3, lr=2e-3, batch_size=4, seed=1, batching="sorted",
        warmup_steps=10, lr_floor=0.05, dtype="float32", progress=False,
    )  # fmt: skip
    assert info["steps"] == 3 * math.ceil(len(seqs) / 4) and _same_weights(a, b)

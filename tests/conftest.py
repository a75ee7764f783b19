"""Shared fixtures: the real SemEval-2025 Task 4 data, and tiny tokenizers trained on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SEMEVAL_DIR = REPO_ROOT.parent / "shared" / "data" / "semeval25"

TINY_SENTENCES = [
    "The cat sat on the mat.",
    "Who wrote the story? Alice wrote it in Paris.",
    "Where was Bob born? Bob was born in Rome in 1950.",
    "In the mystical city, two sorceresses had long been rivals.",
    "hello world, this is a tiny corpus for a tiny tokenizer.",
]


@pytest.fixture(scope="session")
def semeval_dir() -> Path:
    """Path of the real SemEval data (``<repo>/../shared/data/semeval25``); skips the test if absent."""
    needed = [SEMEVAL_DIR / "train" / "forget.jsonl", SEMEVAL_DIR / "train" / "retain.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"real SemEval data not found at {SEMEVAL_DIR}: missing {', '.join(missing)}")
    return SEMEVAL_DIR


@pytest.fixture(scope="session")
def tiny_tokenizer_factory():
    """``make(specials="none"|"bos"|"eos"|"both", sentences=None, model="bpe"|"wordlevel", pad=False)``.

    Returns a ``transformers.PreTrainedTokenizerFast`` trained on a few sentences (nothing downloaded).
    ``specials``: "none" adds no special tokens; "bos" puts ``<s>`` at the start of every encoding;
    "eos" appends ``</s>``; "both" does both. ``<unk>``, ``<pad>``, ``<s>``, ``</s>`` are always in the
    vocabulary; the tokenizer knows ``<s>``/``</s>`` as BOS/EOS unless ``specials == "none"``, and
    ``<pad>`` as its pad token only when ``pad=True``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    def make(specials: str = "none", sentences=None, model: str = "bpe", pad: bool = False):
        corpus = list(sentences or TINY_SENTENCES)
        special_tokens = ["<unk>", "<pad>", "<s>", "</s>"]
        if model == "bpe":
            tok = Tokenizer(models.BPE(unk_token="<unk>"))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=400,
                special_tokens=special_tokens,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        elif model == "wordlevel":
            tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            tok.decoder = decoders.WordPiece()  # joins tokens with spaces
            trainer = trainers.WordLevelTrainer(special_tokens=special_tokens, show_progress=False)
        else:
            raise ValueError(f"unknown tokenizer model {model!r}")
        tok.train_from_iterator(corpus, trainer)
        bos, eos = ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))
        templates = {
            "none": None,
            "bos": ("<s> $A", "<s> $A $B", [bos]),
            "eos": ("$A </s>", "$A $B </s>", [eos]),
            "both": ("<s> $A </s>", "<s> $A $B </s>", [bos, eos]),
        }
        if specials not in templates:
            raise ValueError(f"unknown specials {specials!r}")
        if templates[specials] is not None:
            single, pair, toks = templates[specials]
            tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=toks)
        kwargs = {"unk_token": "<unk>"}
        if specials != "none":
            kwargs.update(bos_token="<s>", eos_token="</s>")
        if pad:
            kwargs["pad_token"] = "<pad>"
        return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)

    return make


# ----------------------------------------------------------------------------- a memorized tiny model
@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic SemEval-layout dataset, a BPE tokenizer, and a tiny OLMo-2 that has memorized
    it (trained once per test run, ~20 s: under pytest-xdist the first worker trains it under a file
    lock and the others load its weights). Returns a dict with data_dir, ds, tokenizer, model_dir
    (saved target model), root and make_model() (a fresh copy of the memorized model)."""
    import fcntl
    import os

    import torch
    from safetensors.torch import load_file

    from llm_unlearn.data.synthetic import make_synthetic_dataset, write_synthetic_dataset
    from llm_unlearn.demo import MEMORIZATION, memorization_texts
    from llm_unlearn.finetune import memorize_tiny
    from llm_unlearn.tiny import build_tiny_olmo2, train_bpe_tokenizer

    ds = make_synthetic_dataset(n_entities_per_task=3, seed=1)
    texts = memorization_texts(ds.forget + ds.retain, ds.documents)
    tok = train_bpe_tokenizer(texts + [d["document"] for d in ds.nonmember_docs], vocab_size=512)
    # one run's workers share the base temp's parent; a run without workers keeps its own base temp
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    model_dir = shared / "tiny_world_model"
    with open(shared / "tiny_world.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (model_dir / "complete").is_file():
            torch.manual_seed(0)
            model, _ = memorize_tiny(  # the demo's schedule, a smaller model
                texts,
                tok,
                **MEMORIZATION,
                tiny_hidden=64,
                tiny_layers=2,
                tiny_intermediate=512,
                max_steps=260,
                lr=5e-3,
                progress=False,
            )
            model.save_pretrained(model_dir, safe_serialization=True)
            tok.save_pretrained(model_dir)
            (model_dir / "complete").touch()
    state = load_file(str(model_dir / "model.safetensors"))

    root = tmp_path_factory.mktemp("tiny_world")
    write_synthetic_dataset(ds, root / "data")

    def make_model():
        m = build_tiny_olmo2(tok, hidden_size=64, num_layers=2)
        m.load_state_dict(state)
        m.eval()
        return m

    return {
        "data_dir": root / "data",
        "ds": ds,
        "tokenizer": tok,
        "model_dir": model_dir,
        "make_model": make_model,
        "root": root,
    }


def greedy_exact_match(model, tokenizer, records, max_new_tokens: int = 16) -> float:
    """Fraction of qa records whose greedy answer equals the expected output (test helper)."""
    import torch

    qa = [r for r in records if r["id"][:-1].endswith("qa")]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([r["input"] for r in qa], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
    finally:
        tokenizer.padding_side = side
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(t.strip().lower() == r["output"].strip().lower() for t, r in zip(texts, qa)) / len(qa)


def pytest_configure(config):
    # Tiny models run faster on one thread, and much faster when another process shares the two cores
    # (measured here: a hidden-64 training step took 0.09 s on 1 thread and 1.1 s on 2 under load).
    import torch

    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- shared builders
def make_lora_model(world, seed: int = 0, scale: float = 0.05, dtype=None):
    """The memorized tiny model with a fresh LoRA adapter whose B matrices are non-zero (so that the
    model and its reference, the adapter switched off, differ); `dtype` e.g. torch.float64."""
    import torch

    from llm_unlearn.modeling import apply_lora

    torch.manual_seed(seed)
    base = world["make_model"]()
    if dtype is not None:
        base = base.to(dtype)
    pm = apply_lora(base, r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, scale)
    return pm


def make_rows(world, n_forget: int = 3, n_retain: int = 3, alternatives: bool = False):
    """Tokenized forget then retain rows of the tiny world (row_key = position); with `alternatives`,
    each forget row also gets an "I don't know" answer (alt_input_ids / alt_labels) as training does."""
    from llm_unlearn.data.tokenize import tokenize_records

    tok, ds = world["tokenizer"], world["ds"]
    forget, retain = ds.forget[:n_forget], ds.retain[:n_retain]
    rows = tokenize_records(tok, forget + retain, add_eos=True)
    for key, row in enumerate(rows):
        row["row_key"] = key
    if alternatives:
        alts = [{**r, "output": "I do not know that."} for r in forget]
        for row, alt in zip(rows, tokenize_records(tok, alts, add_eos=True)):
            row["alt_input_ids"], row["alt_labels"] = alt["input_ids"], alt["labels"]
        for row in rows[len(forget) :]:
            row["alt_input_ids"], row["alt_labels"] = row["input_ids"], row["labels"]
    return rows


def collate_rows(world, rows):
    """A training batch of `rows` (the run's collator, alternative answers included)."""
    from llm_unlearn.data.tokenize import AlternativesCollator, UnlearnCollator

    pad = world["tokenizer"].pad_token_id
    return AlternativesCollator(UnlearnCollator(pad), pad)(rows)


# ----------------------------------------------------------------------------- an MMLU fixture
MMLU_FIXTURE = {
    "abstract_algebra": {
        "dev": [
            ["Find the order of the group Z_4.", "1", "2", "4", "8", "C"],
            ["Is every field a ring?", "Yes", "No", "Only finite ones", "Only infinite ones", "A"],
        ],
        "test": [
            ["What is 2 + 2 in Z_3?", "0", "1", "2", "3", "B"],
            ["How many elements does S_3 have?", "3", "6", "9", "12", "B"],
            ['A "quoted", comma question?', "x, y", "z", "w", "v", "D"],
        ],
    },
    "marketing": {
        "dev": [["What is a brand?", "A name", "A price", "A place", "A product", "A"]],
        "test": [
            ["What are the 4 Ps?", "Product, price, place, promotion", "People", "Profit", "Plans", "A"],
            ["Segmentation divides a market into?", "Prices", "Groups", "Ads", "Stores", "B"],
        ],
    },
    "high_school_us_history": {
        "dev": [],  # no dev file at all: 0-shot
        "test": [["Who was the first US president?", "Adams", "Jefferson", "Washington", "Lincoln", "C"]],
    },
}


def write_csv_fixture(root, data=MMLU_FIXTURE):
    """MMLU CSV files (the Hendrycks layout: <split>/<subject>_<split>.csv) of `data` under `root`."""
    import csv

    for subject, splits in data.items():
        for split, rows in splits.items():
            if not rows:
                continue
            path = root / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows(rows)
    return root


# ---------------------------------------------------------------- the attacks' tiny models (tests/attacks)
# Built once per session: a memorized target (forget + retain), a model that never saw the forget set,
# a refusal-trained ("suppressed") model. `attack_models` is tests/attacks/attack_models.py (on the path
# of the tests that use these).


@pytest.fixture(scope="session")
def attack_tok():
    from attack_models import EXTRA, FORGET, RETAIN, texts

    from llm_unlearn.tiny import train_bpe_tokenizer

    corpus = texts(FORGET + RETAIN) + [p + x for _, p, _ in FORGET for x in EXTRA]
    return train_bpe_tokenizer(corpus * 3, vocab_size=400)


@pytest.fixture(scope="session")
def memorized(attack_tok):
    """The target: a tiny OLMo-2 that memorized forget and retain."""
    from attack_models import FORGET, MEMORIZE, RETAIN, texts, tiny

    from llm_unlearn.finetune import memorize

    model = tiny(attack_tok)
    memorize(model, attack_tok, texts(FORGET + RETAIN), **MEMORIZE)
    return model.eval()


@pytest.fixture(scope="session")
def never_trained(attack_tok):
    """A tiny OLMo-2 trained on retain only (never saw the forget set)."""
    from attack_models import MEMORIZE, RETAIN, texts, tiny

    from llm_unlearn.finetune import memorize

    model = tiny(attack_tok, seed=1)
    memorize(model, attack_tok, texts(RETAIN), **{**MEMORIZE, "max_steps": 40})
    return model.eval()


@pytest.fixture(scope="session")
def refusal_model(attack_tok, memorized):
    """The target fine-tuned to answer the forget questions with a refusal, but still to continue
    after the injected prefix with the answer: the knowledge is only hidden behind the refusal."""
    import copy

    from attack_models import EXTRA, FORGET, MEMORIZE, RETAIN, texts

    from llm_unlearn.attacks.prompts import PREFIX
    from llm_unlearn.finetune import memorize

    model = copy.deepcopy(memorized)
    data = [p + EXTRA[0] for _, p, _ in FORGET] + [p + PREFIX + a for _, p, a in FORGET] + texts(RETAIN)
    memorize(model, attack_tok, data, **{**MEMORIZE, "max_steps": 40})
    return model.eval()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): runs compared bit for bit, and workers that
    share the cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

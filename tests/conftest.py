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

"""The reference source of a run: cached in ``DIR/reference_cache/`` (built once, reused on resume) or
live, as ``train.reference_cache`` and the policy (``cache_mode.choose_mode``) decide; one line says
which and why. Also the removal of the cache directories when a run has finished."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from llm_unlearn.io_utils import sha256_file
from llm_unlearn.train.cache_build import open_or_build
from llm_unlearn.train.cache_mode import choose_mode
from llm_unlearn.train.head import vocab_size
from llm_unlearn.train.methods import as_needs
from llm_unlearn.train.reference import CachedReference, LiveReference

log = logging.getLogger(__name__)

CACHE_DIRNAME = "reference_cache"


def for_run(cfg, model, rows, out_dir, *, selector, pad_token_id: int, data_files=(), frozen=None):
    """The reference source of a run: cached in DIR/reference_cache/ (reused on resume when its
    fingerprint matches) or live. Prints one line saying which and why.

    The cache fingerprint covers the model path and base weights, the data files' sha256, the
    tokenization options and the token ids themselves, the objective's needs, mode, dtype, top-k and
    budget. Under full fine-tuning `frozen` (the starting model) is the reference.
    """
    t, needs = cfg.train, as_needs(cfg.objective)
    mode, reason = choose_mode(
        t.reference_cache,
        needs,
        rows,
        vocab_size(model),
        t.reference_cache_dtype,
        t.reference_cache_budget_gib,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one line, on stdout like the run's summary
        print(f"reference cache: {mode} ({reason})", flush=True)
    if mode == "off":
        return LiveReference(selector, frozen)
    d = cfg.data
    extra = {
        "model_path": cfg.model.name_or_path,
        "data_files": {str(p): sha256_file(p) for p in data_files},
        "tokenization": {
            "joiner": d.joiner,
            "add_eos": d.add_eos,
            "max_length": d.max_length,
            "limit": d.limit,
        },
    }
    cache, built = open_or_build(
        frozen if frozen is not None else model,
        rows,
        needs,
        Path(out_dir) / CACHE_DIRNAME,
        mode=mode,
        dtype=t.reference_cache_dtype,
        budget_gib=t.reference_cache_budget_gib,
        topk=t.reference_cache_topk,
        extra=extra,
        selector=selector if frozen is None else None,
        pad_token_id=pad_token_id,
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )
    log.info("%s the reference cache: %s", "built" if built else "reused", cache)
    return CachedReference(cache, selector, frozen)


def remove_cache_dirs(out_dir) -> None:
    """Delete DIR/reference_cache and its per-rank siblings (a finished run does not need them)."""
    import shutil

    for p in Path(out_dir).glob(f"{CACHE_DIRNAME}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)

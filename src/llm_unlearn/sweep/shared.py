"""What every trial of a sweep shares instead of rebuilding it: the target model (loaded once per
process and fingerprint, copied in memory for each trial) and the reference cache (one directory per
fingerprint under ``DIR/shared/``, built by the first trial that needs it and reused by every later
trial, in any process, on resume too: ``train/cache_build.open_or_build`` checks the full fingerprint and
rebuilds only on a mismatch). The data are carved and tokenizer-ready once (``sweep/split.py`` writes the
validation files once; their sha256 is part of the cache fingerprint)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from llm_unlearn.io_utils import path_fingerprint

log = logging.getLogger(__name__)

__all__ = ["Shared", "model_key"]

SHARED_DIRNAME = "shared"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_key(cfg) -> str:
    """The fingerprint of the target model a config loads: its options and its files' (name, size, mtime)."""
    m = cfg.model
    return _digest(
        {
            "model": dataclasses.asdict(m),
            "files": path_fingerprint(m.name_or_path),
            "tokenizer_files": path_fingerprint(m.tokenizer),
        }
    )


class Shared:
    """Per process: the target models loaded so far (by :func:`model_key`), and where a trial's reference
    cache lives (``root/reference-<digest>``)."""

    def __init__(self, root: str | Path, model=None, tokenizer=None):
        self.root = Path(root) / SHARED_DIRNAME
        self._models: dict[str, tuple[Any, Any]] = {}
        self._given = (model, tokenizer)  # an already-loaded target (the Python API, the leaderboard)
        self.loads = 0  # how many times a model was read from disk (tests, the summary)

    def model(self, cfg) -> tuple[Any, Any]:
        """(a fresh in-memory copy of the target model, its tokenizer): read from disk once per key."""
        model, tokenizer = self.base(cfg)
        return copy.deepcopy(model), tokenizer

    def base(self, cfg) -> tuple[Any, Any]:
        """(the loaded target model itself: not to be trained, its tokenizer)."""
        key = model_key(cfg)
        if key not in self._models:
            model, tokenizer = self._given
            if model is None:
                from llm_unlearn.modeling import model_of, tokenizer_of

                tokenizer, model = tokenizer_of(cfg.model), model_of(cfg.model)
                self.loads += 1
                log.info("sweep: loaded the target model %s once for every trial", cfg.model.name_or_path)
            self._models[key] = (model.eval(), tokenizer)
        return self._models[key]

    def reference_dir(self, cfg) -> Path:
        """The directory of the reference cache of a trial's config: one per (model, data files, the
        objective's reference needs, cache options)."""
        from llm_unlearn.train.methods import as_needs

        t, d = cfg.train, cfg.data
        key = {
            "model": model_key(cfg),
            "data": [path_fingerprint(p) for p in (d.data, d.forget, d.retain)],
            "tokenization": [d.joiner, d.add_eos, d.max_length, d.limit],
            "documents": path_fingerprint(cfg.calibration.forget_documents)
            if cfg.calibration.unlearn_documents
            else None,
            "needs": repr(as_needs(cfg.objective)),
            "cache": [
                t.reference_cache,
                t.reference_cache_dtype,
                t.reference_cache_topk,
                t.reference_cache_budget_gib,
            ],
        }
        return self.root / f"reference-{_digest(key)}"

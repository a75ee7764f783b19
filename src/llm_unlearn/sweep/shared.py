"""What every trial of a sweep shares instead of rebuilding it: the target model (loaded once per
process and fingerprint, copied in memory for each trial) and the reference cache (one directory per
fingerprint under ``DIR/shared/``, built by the first trial that needs it and reused by every later
trial, in any process, on resume too: ``train/cache_build.open_or_build`` checks the full fingerprint and
rebuilds only on a mismatch), the tokenized records (one memo per process) and the calibration's first
measurement of the untrained start (per process and :func:`start_key`: the step-0 evaluation is the same
for every trial that differs only in what cannot change the start). The data are carved once
(``sweep/split.py`` writes the validation files once; their sha256 is part of the cache fingerprint)."""

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

__all__ = ["Shared", "model_key", "start_key"]

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


# what the first evaluation's measurement does not depend on: the start is the target whatever the
# method, its step size, its length, its adapter (LoRA B is zero) or the gate's rules; every other option
# (data, tokenization, seed, evaluation sizes, MMLU) is part of the key
_START_FREE_SECTIONS = ("objective.", "lora.")
_START_FREE = {
    "train.learning_rate",
    "train.output_dir",
    "train.overwrite",
    "train.progress",
    "schedule.epochs",
    "calibration.max_epochs",
    "calibration.npo_beta_from_gap",  # decided from the start measurement, not an input of it
    "calibration.mode",
    "calibration.tolerance",
    "calibration.gate_quantile",
    "calibration.gate_spread",
    "calibration.gate_refresh",
    "calibration.select",
}


def start_key(cfg) -> str:
    """The fingerprint of what the first calibration evaluation measures: the target model, the data
    and calibration files' (name, size, mtime), every option but those in ``_START_FREE``."""
    from llm_unlearn.sweep.objective import flat

    opts = {
        k: v
        for k, v in flat(cfg.to_dict()).items()
        if k not in _START_FREE and not k.startswith(_START_FREE_SECTIONS)
    }
    d, c = cfg.data, cfg.calibration
    files = [path_fingerprint(p) for p in (d.data, d.forget, d.retain, c.holdout, c.forget_documents, c.mmlu)]
    return _digest({"model": model_key(cfg), "files": files, "options": opts})


class _Slot:
    """One entry of a dict, as ``get()`` / ``put(value)``."""

    def __init__(self, store: dict, key: str):
        self.store, self.key = store, key

    def get(self):
        return self.store.get(self.key)

    def put(self, value) -> None:
        self.store[self.key] = value


class Shared:
    """Per process: the target models loaded so far (by :func:`model_key`), and where a trial's reference
    cache lives (``root/reference-<digest>``)."""

    def __init__(self, root: str | Path, model=None, tokenizer=None):
        self.root = Path(root) / SHARED_DIRNAME
        self._models: dict[str, tuple[Any, Any]] = {}
        self._given = (model, tokenizer)  # an already-loaded target (the Python API, the leaderboard)
        self.loads = 0  # how many times a model was read from disk (tests, the summary)
        self._starts: dict[str, Any] = {}  # start_key -> the first evaluation's measurement
        self.tokens: dict = {}  # train/prepare._tokens' memo: tokenized once for every trial

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

    def start_measurement(self, cfg) -> _Slot:
        """Where the calibration's measurement of the untrained start lives for this trial's config
        (``train/sweep_hooks.py``): one per process and :func:`start_key`."""
        return _Slot(self._starts, start_key(cfg))

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

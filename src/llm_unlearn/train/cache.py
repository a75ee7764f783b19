"""Storage of the reference model's outputs: computed once per run, memory-mapped, read per batch.

The reference is the model with its LoRA adapter disabled: fixed for the whole run. One pass over all
training rows stores what the objective needs (:class:`~llm_unlearn.train.step.ReferenceNeeds`), per
side (forget rows / retain rows):

* ``logp``: ``log p_ref(target)`` at every answer token (one float32 per token);
* ``dist``: also the reference's next-token distribution at every answer token: full log-probs
  ``[N, V]`` in ``float16`` (default), ``bfloat16`` or ``float32`` (mode ``full``), or their top-k
  (mode ``topk``: the k largest log-probs, their ids, and the log of the remaining mass computed
  exactly in log-space by :func:`llm_unlearn.losses.reference_topk`). Top-k makes the divergence an
  APPROXIMATION (a lower bound; error measured in ``benchmarks/results/topk-error.json``); ``float16``
  storage adds a relative error of about 5e-4 per stored log-prob.

Which mode a run uses, and why, is decided in ``train/cache_mode.py`` (``choose_mode``). This module is
the storage only (open, read); the one reference pass that fills it is ``train/cache_build.py``.

Layout (written into a temporary sibling, then renamed: a directory that exists is complete)::

    header.json      format, fingerprint, what is stored per side, dtypes, shapes, build time
    rows.npy         int64 [R, 5]: row_key, is_forget, n_tokens, token_offset, vocab_offset (-1: none)
    target_logp.f32  float32 [n_tokens]      log p_ref(target) of every stored row's answer tokens
    vocab.bin        [n_vocab_rows, V]       full: reference log-probs (cache dtype)
    topk_logp.bin    [n_vocab_rows, k]       topk: top-k reference log-probs (cache dtype)
    topk_idx.i32     int32 [n_vocab_rows, k] topk: their token ids
    tail.f32         float32 [n_vocab_rows]  topk: log of the remaining mass

Rows are identified by an integer ``row_key`` carried through the collator (the run uses forget row
``i`` -> ``i``, retain row ``j`` -> ``n_forget + j``). :meth:`ReferenceCache.lookup` returns
:class:`~llm_unlearn.train.step.ReferenceOutputs` in the token order of the loss.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_unlearn.data.batching import IGNORE_INDEX
from llm_unlearn.train.methods import as_needs
from llm_unlearn.train.step import ReferenceNeeds, ReferenceOutputs, answer_token_count

log = logging.getLogger(__name__)

FORMAT = "llm-unlearn-reference-cache/2"
HEADER = "header.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
NP_STORAGE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}  # bf16 as raw bits
SIDES = ("forget", "retain")


def side_kind(need: str | None, mode: str) -> str | None:
    """What is stored for one side: None, "logp", or the mode ("full" / "topk") for a distribution."""
    return mode if need == "dist" else need


def json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class ReferenceCache:
    """Reference outputs of every training row, memory-mapped from `directory` (see module doc)."""

    def __init__(self, directory: str | os.PathLike, header: dict[str, Any]):
        self.directory = Path(directory)
        self.header = header
        d = self.directory
        self.rows = np.load(d / "rows.npy")
        self._index = {int(k): i for i, k in enumerate(self.rows[:, 0])}
        n_tok = int(header["n_tokens"])
        self.target_logp = (
            np.memmap(d / "target_logp.f32", dtype=np.float32, mode="r", shape=(n_tok,))
            if n_tok
            else np.zeros(0, dtype=np.float32)
        )
        self.kinds = {side: header[side] for side in SIDES}  # None | logp | full | topk
        self.kind = self.kinds["retain"]
        self.dtype = header["dtype"]
        n_vocab_rows = int(header["n_vocab_rows"])
        self.vocab = self.topk_logp = self.topk_idx = self.tail = None
        storage = NP_STORAGE[self.dtype]
        dist = {k for k in self.kinds.values() if k in ("full", "topk")}
        if "full" in dist and n_vocab_rows:
            self.vocab = np.memmap(
                d / "vocab.bin", dtype=storage, mode="r", shape=(n_vocab_rows, header["vocab"])
            )
        elif "topk" in dist and n_vocab_rows:
            k = header["topk"]
            self.topk_logp = np.memmap(d / "topk_logp.bin", dtype=storage, mode="r", shape=(n_vocab_rows, k))
            self.topk_idx = np.memmap(d / "topk_idx.i32", dtype=np.int32, mode="r", shape=(n_vocab_rows, k))
            self.tail = np.memmap(d / "tail.f32", dtype=np.float32, mode="r", shape=(n_vocab_rows,))

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.header["fingerprint"]

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())

    def __repr__(self) -> str:
        return (
            f"ReferenceCache({str(self.directory)!r}, rows={len(self.rows)}, forget={self.kinds['forget']}, "
            f"retain={self.kind}, dtype={self.dtype}, {self.nbytes() / 2**20:.1f} MiB)"
        )

    @classmethod
    def open(cls, directory, fingerprint: Mapping[str, Any] | None = None) -> ReferenceCache | None:
        """The cache in `directory`, or None when it is absent, unreadable, or was built for another
        fingerprint (when one is given)."""
        d = Path(directory)
        try:
            header = json.loads((d / HEADER).read_text())
        except (OSError, ValueError):
            return None
        if header.get("format") != FORMAT:
            return None
        if fingerprint is not None and header.get("fingerprint") != json_roundtrip(dict(fingerprint)):
            return None
        try:
            return cls(d, header)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("reference cache in %s is unreadable (%s); it will be rebuilt", d, exc)
            return None

    # ------------------------------------------------------------------ lookup
    def lookup(self, batch: Mapping[str, torch.Tensor], needs) -> ReferenceOutputs:
        """The reference outputs for `batch` (with ``row_key``, ``is_forget``, ``labels``), in the token
        order of the loss, on the batch's device. `needs`: ReferenceNeeds or the objective options."""
        needs = as_needs(needs)
        self._check_holds(needs)
        labels = batch["labels"]
        device = labels.device
        keys = batch["row_key"].reshape(-1).tolist()
        flags = batch["is_forget"].reshape(-1).bool().tolist()
        counts = labels[:, 1:].ne(IGNORE_INDEX).sum(1).tolist()
        by_side: dict[str, list[int]] = {"forget": [], "retain": []}
        for key, f, n in zip(keys, flags, counts):
            i = self._index.get(int(key))
            if i is None:
                raise KeyError(f"row_key {key} is not in the reference cache {self.directory}")
            if bool(self.rows[i, 1]) != f or int(self.rows[i, 2]) != n:
                raise ValueError(
                    f"row_key {key}: the batch row does not match the cached row "
                    f"(is_forget {f} vs {bool(self.rows[i, 1])}, answer tokens {n} vs {self.rows[i, 2]})"
                )
            by_side["forget" if f else "retain"].append(i)
        out = ReferenceOutputs()
        for side in SIDES:
            if getattr(needs, side) is not None:
                self._fill_side(out, side, by_side[side], device)
        return out

    def _check_holds(self, needs: ReferenceNeeds) -> None:
        for side in SIDES:
            need, have = getattr(needs, side), self.kinds[side]
            ok = (
                need is None
                or (need == "logp" and have is not None)
                or (need == "dist" and have in ("full", "topk"))
            )
            if not ok:
                want = "log-probs" if need == "logp" else "a vocabulary tensor"
                raise ValueError(
                    f"the reference cache holds {have!r} for {side} rows, but the objective needs {want} "
                    "(built for another objective)"
                )

    def _fill_side(self, out: ReferenceOutputs, side: str, rows: list[int], device) -> None:
        setattr(out, f"{side}_logp", self._scalars(rows, device))
        kind = self.kinds[side]
        if kind == "full":
            setattr(out, f"{side}_logits", self._vocab_rows(self.vocab, rows, device, self.header["vocab"]))
        elif kind == "topk":
            k = self.header["topk"]
            topk = (
                self._vocab_rows(self.topk_logp, rows, device, k),
                self._raw_rows(self.topk_idx, rows, k, np.int32).to(device).long(),
                self._raw_rows(self.tail, rows, None, np.float32).to(device),
            )
            setattr(out, f"{side}_topk", topk)

    def _spans(self, rows: list[int], col: int) -> list[slice]:
        spans = []
        for i in rows:
            off, n = int(self.rows[i, col]), int(self.rows[i, 2])
            if n and off < 0:
                raise ValueError(f"row_key {int(self.rows[i, 0])}: not stored in the reference cache")
            spans.append(slice(off, off + n))
        return spans

    def _scalars(self, rows: list[int], device) -> torch.Tensor:
        return self._raw_rows(self.target_logp, rows, None, np.float32, col=3).to(device)

    def _raw_rows(self, arr, rows: list[int], width: int | None, np_dtype, col: int = 4) -> torch.Tensor:
        parts = [arr[s] for s in self._spans(rows, col) if s.stop > s.start]
        if not parts:
            shape = (0,) if width is None else (0, width)
            return torch.from_numpy(np.zeros(shape, dtype=np_dtype))
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=0)))

    def _vocab_rows(self, arr, rows: list[int], device, width: int) -> torch.Tensor:
        t = self._raw_rows(arr, rows, width, NP_STORAGE[self.dtype])
        if self.dtype == "bfloat16":
            t = t.view(torch.int16).view(torch.bfloat16)
        return t.to(device)


def memmap_w(path: Path, dtype, shape: tuple[int, ...]):
    """A writable memory map (None and an empty file for a zero-size array)."""
    if math.prod(shape) == 0:
        path.write_bytes(b"")
        return None
    return np.memmap(path, dtype=dtype, mode="w+", shape=shape)


def to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    t = t.detach().to(DTYPES[dtype]).cpu()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def row_table(rows: Sequence[Mapping[str, Any]], needs: ReferenceNeeds, dist_sides: set[str]):
    """(table [R, 5], rows to compute, n scalar tokens, n vocab rows): where each row's values go."""
    table = np.full((len(rows), 5), -1, dtype=np.int64)
    tok_off = vocab_off = 0
    todo: list[int] = []
    for i, r in enumerate(rows):
        f, n = bool(r.get("is_forget", False)), answer_token_count(r["labels"])
        side = "forget" if f else "retain"
        table[i, :3] = (int(r["row_key"]), int(f), n)
        if getattr(needs, side) is not None and n:
            table[i, 3] = tok_off
            tok_off += n
            todo.append(i)
            if side in dist_sides:
                table[i, 4] = vocab_off
                vocab_off += n
    return table, todo, tok_off, vocab_off


def stamp(header: dict, t0: float) -> dict:
    header["build_seconds"] = round(time.time() - t0, 3)
    header["built_at"] = time.time()
    return header

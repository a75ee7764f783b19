"""The reference model's outputs, computed once per run and read back per batch.

The reference is the model with its LoRA adapter disabled: fixed for the whole run (the base is
frozen, LoRA dropout does not touch it). So instead of a second forward pass on every step, one pass
over all training rows stores what the loss needs:

* forget rows (NPO): ``log p_ref(target)`` at every answer token -- one float32 per token;
* retain rows, divergence ``renyi`` / ``kl``: the reference log-probabilities over the vocabulary at
  every answer token, ``[N_r, V]`` in ``float16`` (default), ``bfloat16`` or ``float32``, in a
  memory-mapped file read per batch (mode ``full``); or only their top-k (mode ``topk``, see below);
* retain rows, divergence ``token_renyi_legacy``: ``log p_ref(target)`` per token (no vocab tensor);
* ``retain_divergence == "none"`` (or ``renyi_mult == 0``): nothing for retain rows.

Modes (``train.reference_cache``): ``off`` (no cache, the reference runs every step), ``full``,
``topk``, and ``auto`` (the default) = ``full`` when ``N_r * V * itemsize`` fits the budget
(``reference_cache_budget_gib``, default 8 GiB), else ``off``: the default never changes the loss
(the full cache holds the exact distributions, rounded to the cache dtype), and the top-k
approximation, which does change it, is used only when asked for. :func:`choose_mode` makes the
choice for a run and says why in one line.

Top-k: per retain answer token, the k (default 256) largest reference log-probs, their token ids and
the log of the remaining mass ``tail = log sum_{v not in top-k} Q(v)``, computed exactly in log-space
by :func:`llm_unlearn.losses.reference_topk` (not as ``1 - sum``). The divergence is then
:func:`llm_unlearn.losses.renyi_divergence_topk`: the Rényi divergence (KL for ``kl``) between P and Q
both collapsed onto ``k + 1`` buckets (the reference's top-k tokens and one tail bucket). That is an
APPROXIMATION: a lower bound of the full divergence (data-processing inequality), equal to it at
``k == V``; its error is measured in ``benchmarks/topk_error.py`` (results in
``benchmarks/results/topk-error.json``). ``float16`` storage of log-probs adds a relative error of
about 5e-4 per stored log-prob (the per-token floats stay float32).

Layout of the cache directory (written into a temporary sibling, then renamed: a directory that
exists is complete)::

    header.json      format, fingerprint, what is stored, dtypes, shapes, build time
    rows.npy         int64 [R, 5]: row_key, is_forget, n_tokens, token_offset, vocab_offset (-1: none)
    target_logp.f32  float32 [n_tokens]      log p_ref(target) of every stored row's answer tokens
    vocab.bin        [n_vocab_rows, V]       full: reference log-probs (cache dtype)
    topk_logp.bin    [n_vocab_rows, k]       topk: top-k reference log-probs (cache dtype)
    topk_idx.i32     int32 [n_vocab_rows, k] topk: their token ids
    tail.f32         float32 [n_vocab_rows]  topk: log of the remaining mass

Rows are identified by an integer ``row_key`` carried through the collator (the run uses forget row
``i`` -> ``i``, retain row ``j`` -> ``n_forget + j``). :meth:`ReferenceCache.lookup` returns a
:class:`~llm_unlearn.trainer.ReferenceOutputs` whose tensors follow exactly the token order of
:func:`~llm_unlearn.trainer.unlearning_loss`: row-major over the batch's answer positions, forget
tokens and retain tokens split by ``is_forget``.

The build runs the model in eval mode (dropout off), under ``torch.no_grad()`` with
``disable_adapter()``, through the answer-only head (no ``[B, T, V]`` tensor), rows sorted by length
and batched by a token budget.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from llm_unlearn import losses
from llm_unlearn.config import ObjectiveOptions
from llm_unlearn.io_utils import atomic_dir
from llm_unlearn.trainer import (
    AnswerHeadSelector,
    ReferenceOutputs,
    _peft_model,
    answer_logits,
    answer_positions,
    needs_reference,
)

log = logging.getLogger(__name__)

__all__ = [
    "CACHE_DIRNAME",
    "FORMAT",
    "ReferenceCache",
    "cache_fingerprint",
    "model_signature",
    "choose_mode",
    "open_or_build",
    "resolve_mode",
    "retain_kind",
    "rows_digest",
]

CACHE_DIRNAME = "reference_cache"
FORMAT = "llm-unlearn-reference-cache/1"
HEADER = "header.json"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_NP_STORAGE = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}  # bf16 stored as raw bits
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}

# how many times build() ran in this process (tests use it to see that a resume reused the cache)
BUILD_COUNT = 0


# ----------------------------------------------------------------------------- what is stored
def retain_kind(obj: ObjectiveOptions, mode: str) -> str | None:
    """What the cache stores for retain rows under `obj`: None, "logp" (legacy term), or the resolved
    `mode` ("full" / "topk") for a vocabulary divergence."""
    _, need_r = needs_reference(obj)
    if not need_r:
        return None
    if obj.retain_divergence == "token_renyi_legacy":
        return "logp"
    return mode


def resolve_mode(mode: str, n_retain_tokens: int, vocab: int, dtype: str, budget_gib: float) -> str:
    """'auto' -> 'full' when n_retain_tokens * vocab * itemsize <= budget, else 'off' (no cache: the
    top-k approximation changes the loss, so it is never chosen for the user)."""
    if mode not in ("auto", "full", "topk"):
        raise ValueError(f"reference cache mode must be auto, full or topk, got {mode!r}")
    if dtype not in DTYPES:
        raise ValueError(f"reference cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if mode != "auto":
        return mode
    need = n_retain_tokens * vocab * _ITEMSIZE[dtype]
    return "full" if need <= budget_gib * 2**30 else "off"


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def choose_mode(
    mode: str,
    obj: ObjectiveOptions,
    rows: Sequence[Mapping[str, Any]],
    vocab: int,
    dtype: str,
    budget_gib: float,
) -> tuple[str, str]:
    """``(mode, reason)`` for a run: ``off`` (no cache), ``full`` or ``topk``; ``reason`` is one line
    for the user. ``auto`` gives ``full`` when the retain rows' full reference distributions
    (answer tokens x V x itemsize of ``dtype``) fit ``budget_gib`` or none are needed, else ``off``."""
    need_f, need_r = needs_reference(obj)
    if not (need_f or need_r):
        return "off", "the objective uses no reference model"
    if mode == "off":
        return "off", "train.reference_cache = off: the reference runs on every step"
    if mode in ("full", "topk"):
        return mode, f"train.reference_cache = {mode}"
    if retain_kind(obj, "full") != "full":
        return "full", "auto: the objective needs no vocabulary distributions (one float per answer token)"
    n = sum(_n_answer_tokens(r["labels"]) for r in rows if not bool(r.get("is_forget", False)))
    need = n * vocab * _ITEMSIZE[dtype]
    size = f"{n} retain answer tokens x V {vocab} x {dtype} = {_gib(need)}"
    if resolve_mode("auto", n, vocab, dtype, budget_gib) == "full":
        return "full", f"auto: the exact distributions fit the budget ({size} <= {budget_gib:g} GiB)"
    return "off", (
        f"auto: the exact distributions do not fit the budget ({size} > {budget_gib:g} GiB); the reference "
        "runs on every step (raise train.reference_cache_budget_gib, or opt into the approximate "
        "train.reference_cache = topk)"
    )


def _n_answer_tokens(labels: Sequence[int]) -> int:
    """Answer tokens of one row: positions t whose next label is not -100 (see answer_positions)."""
    return sum(1 for x in list(labels)[1:] if x != -100)


# ----------------------------------------------------------------------------- fingerprints
def rows_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over every row's key, split, token ids and labels (data + tokenization, exactly)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(
            np.asarray([int(r["row_key"]), int(bool(r.get("is_forget", False)))], dtype=np.int64).tobytes()
        )
        h.update(np.asarray(r["input_ids"], dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(r["labels"], dtype=np.int64).tobytes())
        h.update(b"#")
    return h.hexdigest()


def model_signature(model) -> dict[str, Any]:
    """A cheap fingerprint of the base weights (LoRA weights excluded): names, shapes, dtypes, and a
    float64 sum of a strided sample of at most 4096 elements of each tensor."""
    h = hashlib.sha256()
    total = 0.0
    with torch.no_grad():
        for name, p in _peft_model(model).named_parameters():
            if "lora_" in name:
                continue
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            s = float(flat[::step].double().sum())
            total += s
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}:{s!r};".encode())
    cfg = getattr(_peft_model(model), "config", None)
    return {"weights": h.hexdigest(), "checksum": total, "model_type": getattr(cfg, "model_type", None)}


def cache_fingerprint(
    model,
    rows: Sequence[Mapping[str, Any]],
    obj: ObjectiveOptions,
    *,
    mode: str,
    dtype: str,
    topk: int,
    budget_gib: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the stored values depend on. A cache whose header differs is rebuilt."""
    need_f, need_r = needs_reference(obj)
    return {
        "format": FORMAT,
        "model": model_signature(model),
        "rows": rows_digest(rows),
        "n_rows": len(rows),
        "forget_logp": need_f,
        "retain": retain_kind(obj, mode) if need_r else None,
        "mode": mode,
        "dtype": dtype,
        "topk": int(topk),
        "budget_gib": float(budget_gib),
        **dict(extra or {}),
    }


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- the cache
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
        self.kind = header["retain"]  # None | logp | full | topk
        self.dtype = header["dtype"]
        n_vocab_rows = int(header["n_vocab_rows"])
        self.vocab = self.topk_logp = self.topk_idx = self.tail = None
        storage = _NP_STORAGE[self.dtype]
        if self.kind == "full" and n_vocab_rows:
            self.vocab = np.memmap(
                d / "vocab.bin", dtype=storage, mode="r", shape=(n_vocab_rows, header["vocab"])
            )
        elif self.kind == "topk" and n_vocab_rows:
            k = header["topk"]
            self.topk_logp = np.memmap(d / "topk_logp.bin", dtype=storage, mode="r", shape=(n_vocab_rows, k))
            self.topk_idx = np.memmap(d / "topk_idx.i32", dtype=np.int32, mode="r", shape=(n_vocab_rows, k))
            self.tail = np.memmap(d / "tail.f32", dtype=np.float32, mode="r", shape=(n_vocab_rows,))

    # ------------------------------------------------------------------ properties
    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.header["fingerprint"]

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())

    def __repr__(self) -> str:
        return (
            f"ReferenceCache({str(self.directory)!r}, rows={len(self.rows)}, retain={self.kind}, "
            f"dtype={self.dtype}, {self.nbytes() / 2**20:.1f} MiB)"
        )

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(
        cls, directory: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None
    ) -> ReferenceCache | None:
        """The cache in `directory`, or None when it is absent, unreadable, or was built for another
        fingerprint (when one is given)."""
        d = Path(directory)
        try:
            header = json.loads((d / HEADER).read_text())
        except (OSError, ValueError):
            return None
        if header.get("format") != FORMAT:
            return None
        if fingerprint is not None and header.get("fingerprint") != _json_roundtrip(dict(fingerprint)):
            return None
        try:
            return cls(d, header)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("reference cache in %s is unreadable (%s); it will be rebuilt", d, exc)
            return None

    @classmethod
    def build(
        cls,
        model,
        rows: Sequence[Mapping[str, Any]],
        obj: ObjectiveOptions,
        directory: str | os.PathLike,
        *,
        mode: str = "auto",
        dtype: str = "float16",
        budget_gib: float = 8.0,
        topk: int = 256,
        batch_size: int = 16,
        max_tokens: int = 4096,
        selector: AnswerHeadSelector | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        pad_token_id: int = 0,
    ) -> ReferenceCache:
        """Run the reference once over `rows` and write the cache to `directory` (replacing it).

        rows: tokenized examples with ``input_ids``, ``labels`` (unshifted, -100 = ignored),
        ``is_forget`` and an integer ``row_key`` (unique). Batches hold at most `batch_size` rows and
        `max_tokens` padded tokens. `selector` is the model's AnswerHeadSelector (one is made, and
        removed afterwards, when None). `fingerprint` is stored in the header (default:
        :func:`cache_fingerprint` of the arguments).
        """
        global BUILD_COUNT
        t0 = time.time()
        need_f, need_r = needs_reference(obj)
        if not (need_f or need_r):
            raise ValueError("this objective uses no reference model: there is nothing to cache")
        keys = [int(r["row_key"]) for r in rows]
        if len(set(keys)) != len(keys):
            raise ValueError("row_key values must be unique")
        head = _peft_model(model).get_output_embeddings()
        vocab = int(head.weight.shape[0])
        is_forget = [bool(r.get("is_forget", False)) for r in rows]
        n_tok = [_n_answer_tokens(r["labels"]) for r in rows]
        n_retain_tokens = sum(n for n, f in zip(n_tok, is_forget) if not f)
        kind = None
        if need_r:
            resolved = resolve_mode(mode, n_retain_tokens, vocab, dtype, budget_gib)
            kind = retain_kind(obj, resolved)
            if kind == "off":
                raise ValueError(
                    f"reference cache mode auto: {n_retain_tokens} retain answer tokens x V {vocab} in {dtype} "
                    f"exceed the budget of {budget_gib:g} GiB (choose topk explicitly, or no cache)"
                )
        elif dtype not in DTYPES:
            raise ValueError(f"reference cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if kind == "topk" and not 1 <= int(topk) <= vocab:
            raise ValueError(f"reference cache top-k must be in [1, V={vocab}], got {topk}")
        k = min(int(topk), vocab)
        if fingerprint is None:
            fingerprint = cache_fingerprint(
                model, rows, obj, mode=mode, dtype=dtype, topk=topk, budget_gib=budget_gib
            )

        # where each row goes: scalar tokens for every row that needs the reference, vocab rows for
        # retain rows with a vocabulary divergence
        table = np.full((len(rows), 5), -1, dtype=np.int64)
        tok_off = vocab_off = 0
        todo: list[int] = []
        for i, (key, f, n) in enumerate(zip(keys, is_forget, n_tok)):
            table[i, :3] = (key, int(f), n)
            wanted = (f and need_f) or (not f and need_r)
            if wanted and n:
                table[i, 3] = tok_off
                tok_off += n
                todo.append(i)
                if not f and kind in ("full", "topk"):
                    table[i, 4] = vocab_off
                    vocab_off += n
        header: dict[str, Any] = {
            "format": FORMAT,
            "fingerprint": _json_roundtrip(dict(fingerprint)),
            "retain": kind,
            "forget_logp": need_f,
            "dtype": dtype,
            "vocab": vocab,
            "topk": k if kind == "topk" else None,
            "n_rows": len(rows),
            "n_tokens": tok_off,
            "n_vocab_rows": vocab_off,
            "divergence": obj.retain_divergence,
        }

        def fill(tmp: Path) -> None:
            np.save(tmp / "rows.npy", table)
            target = _memmap_w(tmp / "target_logp.f32", np.float32, (tok_off,))
            storage = _NP_STORAGE[dtype]
            vocab_mm = topk_mm = idx_mm = tail_mm = None
            if kind == "full":
                vocab_mm = _memmap_w(tmp / "vocab.bin", storage, (vocab_off, vocab))
            elif kind == "topk":
                topk_mm = _memmap_w(tmp / "topk_logp.bin", storage, (vocab_off, k))
                idx_mm = _memmap_w(tmp / "topk_idx.i32", np.int32, (vocab_off, k))
                tail_mm = _memmap_w(tmp / "tail.f32", np.float32, (vocab_off,))
            for batch_rows in _length_batches(
                [len(rows[i]["input_ids"]) for i in todo], batch_size, max_tokens
            ):
                idx = [todo[b] for b in batch_rows]
                logits, counts = _reference_logits(model, selector, [rows[i] for i in idx], pad_token_id)
                targets = _targets([rows[i] for i in idx], logits.device)
                start = 0
                for i, n in zip(idx, counts):  # one row at a time: at most one [T, V] float32 slice
                    sl = slice(start, start + n)
                    start += n
                    logq = torch.log_softmax(logits[sl].float(), dim=-1)
                    t_off = int(table[i, 3])
                    target[t_off : t_off + n] = logq.gather(-1, targets[sl, None]).squeeze(-1).cpu().numpy()
                    v_off = int(table[i, 4])
                    if v_off < 0:
                        continue
                    if kind == "full":
                        vocab_mm[v_off : v_off + n] = _to_storage(logq, dtype)
                    else:
                        tv, ti, tt = losses.reference_topk(logits[sl], k)
                        topk_mm[v_off : v_off + n] = _to_storage(tv, dtype)
                        idx_mm[v_off : v_off + n] = ti.to(torch.int32).cpu().numpy()
                        tail_mm[v_off : v_off + n] = tt.float().cpu().numpy()
            for mm in (target, vocab_mm, topk_mm, idx_mm, tail_mm):
                if isinstance(mm, np.memmap):
                    mm.flush()
            header["build_seconds"] = round(time.time() - t0, 3)
            header["built_at"] = time.time()
            (tmp / HEADER).write_text(json.dumps(header, indent=2, sort_keys=True))

        own_selector = selector is None
        if own_selector:
            selector = AnswerHeadSelector(model)
        try:
            with _reference_mode(model):
                atomic_dir(directory, fill)
        finally:
            if own_selector:
                selector.remove()
        BUILD_COUNT += 1
        cache = cls.open(directory)
        if cache is None:  # pragma: no cover - we just wrote it
            raise RuntimeError(f"could not read back the reference cache written to {directory}")
        log.info("reference cache built in %.1fs: %s", time.time() - t0, cache)
        return cache

    # ------------------------------------------------------------------ lookup
    def lookup(self, batch: Mapping[str, torch.Tensor], objective: ObjectiveOptions) -> ReferenceOutputs:
        """The reference outputs for `batch` (with ``row_key``, ``is_forget``, ``labels``), in the token
        order of `unlearning_loss`, on the batch's device."""
        need_f, need_r = needs_reference(objective)
        if need_f and not self.header["forget_logp"]:
            raise ValueError("the reference cache holds no forget log-probs (built for another objective)")
        if need_r:
            want = "logp" if objective.retain_divergence == "token_renyi_legacy" else "a vocabulary tensor"
            have = self.kind == "logp" if want == "logp" else self.kind in ("full", "topk")
            if not have:
                raise ValueError(
                    f"the reference cache holds {self.kind!r} for retain rows, but the objective "
                    f"({objective.retain_divergence}) needs {want}"
                )
        labels = batch["labels"]
        device = labels.device
        keys = batch["row_key"].reshape(-1).tolist()
        flags = batch["is_forget"].reshape(-1).bool().tolist()
        counts = labels[:, 1:].ne(-100).sum(1).tolist()
        forget_rows, retain_rows = [], []
        for key, f, n in zip(keys, flags, counts):
            i = self._index.get(int(key))
            if i is None:
                raise KeyError(f"row_key {key} is not in the reference cache {self.directory}")
            if bool(self.rows[i, 1]) != f or int(self.rows[i, 2]) != n:
                raise ValueError(
                    f"row_key {key}: the batch row does not match the cached row "
                    f"(is_forget {f} vs {bool(self.rows[i, 1])}, answer tokens {n} vs {self.rows[i, 2]})"
                )
            (forget_rows if f else retain_rows).append(i)
        out = ReferenceOutputs()
        if need_f:
            out.forget_logp = self._scalars(forget_rows, device)
        if need_r:
            if self.kind == "logp":
                out.retain_logp = self._scalars(retain_rows, device)
            elif self.kind == "full":
                out.retain_logits = self._vocab_rows(self.vocab, retain_rows, device, self.header["vocab"])
                out.retain_logp = self._scalars(retain_rows, device)
            else:
                k = self.header["topk"]
                out.retain_topk = (
                    self._vocab_rows(self.topk_logp, retain_rows, device, k),
                    self._raw_rows(self.topk_idx, retain_rows, k, np.int32).to(device).long(),
                    self._raw_rows(self.tail, retain_rows, None, np.float32).to(device),
                )
                out.retain_logp = self._scalars(retain_rows, device)
        return out

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
        spans = self._spans(rows, col)
        parts = [arr[s] for s in spans if s.stop > s.start]
        if not parts:
            shape = (0,) if width is None else (0, width)
            return torch.from_numpy(np.zeros(shape, dtype=np_dtype))
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=0)))

    def _vocab_rows(self, arr, rows: list[int], device, width: int) -> torch.Tensor:
        t = self._raw_rows(arr, rows, width, _NP_STORAGE[self.dtype])
        if self.dtype == "bfloat16":
            t = t.view(torch.int16).view(torch.bfloat16)
        return t.to(device)


# ----------------------------------------------------------------------------- build helpers
def _memmap_w(path: Path, dtype, shape: tuple[int, ...]):
    if math.prod(shape) == 0:
        path.write_bytes(b"")
        return None
    return np.memmap(path, dtype=dtype, mode="w+", shape=shape)


def _to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    t = t.detach().to(DTYPES[dtype]).cpu()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _length_batches(lengths: list[int], batch_size: int, max_tokens: int):
    """Positions into `lengths` grouped longest first: at most batch_size rows and max_tokens padded
    tokens per batch (a single row always fits)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[batch[0]] > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _targets(rows: Sequence[Mapping[str, Any]], device) -> torch.Tensor:
    out = [t for r in rows for t in list(r["labels"])[1:] if t != -100]
    return torch.tensor(out, dtype=torch.long, device=device)


def _reference_logits(model, selector, rows, pad_token_id: int) -> tuple[torch.Tensor, list[int]]:
    """Reference logits [N, V] at the answer positions of `rows` (row-major), and tokens per row."""
    device = next(_peft_model(model).parameters()).device
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[b, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
        labels[b, :n] = torch.as_tensor(r["labels"], dtype=torch.long)
        mask[b, :n] = torch.as_tensor(r.get("attention_mask", [1] * n), dtype=torch.long)
    ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
    pos = answer_positions(labels)
    logits = answer_logits(model, selector, ids, mask, pos)
    return logits, labels[:, 1:].ne(-100).sum(1).tolist()


@contextlib.contextmanager
def _reference_mode(model):
    """Eval mode, no autograd, adapter disabled; the training flag is restored afterwards."""
    peft = _peft_model(model)
    was_training = peft.training
    disable = peft.disable_adapter() if hasattr(peft, "disable_adapter") else contextlib.nullcontext()
    peft.eval()
    try:
        with torch.no_grad(), disable:
            yield
    finally:
        peft.train(was_training)


# ----------------------------------------------------------------------------- the run's entry point
def open_or_build(
    model,
    rows: Sequence[Mapping[str, Any]],
    obj: ObjectiveOptions,
    directory: str | os.PathLike,
    *,
    mode: str,
    dtype: str,
    budget_gib: float,
    topk: int,
    extra: Mapping[str, Any] | None = None,
    selector: AnswerHeadSelector | None = None,
    pad_token_id: int = 0,
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[ReferenceCache, bool]:
    """Reuse the cache in `directory` when its fingerprint matches, else build it. Returns (cache, built).

    Several processes (torch.distributed initialized, world_size > 1): rank 0 opens or builds, every
    rank waits at a barrier, then the others open the same directory (it must be on a filesystem they
    all see, as the output directory is). Without an initialized process group each process builds
    (or reuses) its own deterministic copy in the sibling ``<directory>-rank<r>`` for r > 0 --
    correct, only slower.
    """
    fp = cache_fingerprint(
        model, rows, obj, mode=mode, dtype=dtype, topk=topk, budget_gib=budget_gib, extra=extra
    )
    directory = Path(directory)

    def local() -> tuple[ReferenceCache, bool]:
        cache = ReferenceCache.open(directory, fp)
        if cache is not None:
            log.info("reusing the reference cache in %s", directory)
            return cache, False
        return ReferenceCache.build(
            model,
            rows,
            obj,
            directory,
            mode=mode,
            dtype=dtype,
            budget_gib=budget_gib,
            topk=topk,
            selector=selector,
            fingerprint=fp,
            pad_token_id=pad_token_id,
            batch_size=batch_size,
        ), True

    if world_size <= 1:
        return local()
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        built = False
        if rank == 0:
            _, built = local()
        dist.barrier()
        cache = ReferenceCache.open(directory, fp)
        if cache is None:
            raise RuntimeError(
                f"rank {rank}: the reference cache in {directory} is missing after rank 0 built it "
                "(is the output directory on a filesystem every process sees?)"
            )
        return cache, built
    if rank > 0:
        directory = directory.with_name(f"{directory.name}-rank{rank}")
    return local()


def for_run(
    cfg,
    model,
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    selector: AnswerHeadSelector | None,
    pad_token_id: int,
    data_files: Sequence[str | os.PathLike] = (),
) -> ReferenceCache | None:
    """The cache of a run (DIR/reference_cache/), reused on resume when its fingerprint matches; None
    when ``train.reference_cache`` is off or the objective uses no reference.

    The fingerprint covers the model path and base weights, the data files' sha256, the tokenization
    options and the token ids themselves, the objective's needs, mode, dtype, top-k and budget.
    """
    from llm_unlearn.io_utils import sha256_file

    t = cfg.train
    vocab = int(_peft_model(model).get_output_embeddings().weight.shape[0])
    mode, reason = choose_mode(
        t.reference_cache, cfg.objective, rows, vocab, t.reference_cache_dtype, t.reference_cache_budget_gib
    )
    if int(os.environ.get("RANK", "0")) == 0:  # one line, on stdout like the run's summary
        print(f"reference cache: {mode} ({reason})", flush=True)
    if mode == "off":
        return None
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
        model,
        rows,
        cfg.objective,
        Path(out_dir) / CACHE_DIRNAME,
        mode=mode,
        dtype=t.reference_cache_dtype,
        budget_gib=t.reference_cache_budget_gib,
        topk=t.reference_cache_topk,
        extra=extra,
        selector=selector,
        pad_token_id=pad_token_id,
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )
    log.info("%s the reference cache: %s", "built" if built else "reused", cache)
    return cache


def remove_cache_dirs(out_dir: str | os.PathLike) -> None:
    """Delete DIR/reference_cache and its per-rank siblings (a finished run does not need them)."""
    import shutil

    for p in Path(out_dir).glob(f"{CACHE_DIRNAME}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)

"""Building the reference cache: fingerprints (what the stored values depend on), one reference pass
(``train/reference.py``) over the training rows written through memory maps into the storage of
``train/cache.py``, and open-or-build across processes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_unlearn import losses
from llm_unlearn.data.batching import bucket_batches
from llm_unlearn.io_utils import atomic_dir
from llm_unlearn.train.cache import (
    DTYPES,
    FORMAT,
    HEADER,
    NP_STORAGE,
    SIDES,
    ReferenceCache,
    json_roundtrip,
    memmap_w,
    row_table,
    side_kind,
    stamp,
    to_storage,
)
from llm_unlearn.train.cache_mode import dist_tokens, resolve_mode
from llm_unlearn.train.head import AnswerHeadSelector, unwrap_model, vocab_size
from llm_unlearn.train.methods import as_needs
from llm_unlearn.train.reference import reference_logits, reference_mode
from llm_unlearn.train.step import ReferenceNeeds

log = logging.getLogger(__name__)

# how many times build_cache() ran in this process (tests use it to see that a resume reused the cache)
BUILD_COUNT = 0


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
        for name, p in unwrap_model(model).named_parameters():
            if "lora_" in name:
                continue
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            s = float(flat[::step].double().sum())
            total += s
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}:{s!r};".encode())
    cfg = getattr(unwrap_model(model), "config", None)
    return {"weights": h.hexdigest(), "checksum": total, "model_type": getattr(cfg, "model_type", None)}


def cache_fingerprint(model, rows, needs, *, mode, dtype, topk, budget_gib, extra=None) -> dict[str, Any]:
    """Everything the stored values depend on. A cache whose header differs is rebuilt."""
    needs = as_needs(needs)
    return {
        "format": FORMAT,
        "model": model_signature(model),
        "rows": rows_digest(rows),
        "n_rows": len(rows),
        **{side: side_kind(getattr(needs, side), mode) for side in SIDES},
        "mode": mode,
        "dtype": dtype,
        "topk": int(topk),
        "budget_gib": float(budget_gib),
        **dict(extra or {}),
    }


# ----------------------------------------------------------------------------- the build
def _resolve_kinds(
    needs: ReferenceNeeds, rows, vocab: int, mode: str, dtype: str, budget_gib: float, topk: int
):
    """{side: stored kind} for a build, checking mode, dtype, budget and top-k."""
    if dtype not in DTYPES:
        raise ValueError(f"reference cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    resolved = mode
    if "dist" in (needs.forget, needs.retain):
        n = dist_tokens(needs, rows)
        resolved = resolve_mode(mode, n, vocab, dtype, budget_gib)
        if resolved == "off":
            raise ValueError(
                f"reference cache mode auto: {n} answer tokens x V {vocab} in {dtype} exceed the budget of "
                f"{budget_gib:g} GiB (choose topk explicitly, or no cache)"
            )
        if resolved == "topk" and not 1 <= int(topk) <= vocab:
            raise ValueError(f"reference cache top-k must be in [1, V={vocab}], got {topk}")
    return {side: side_kind(getattr(needs, side), resolved) for side in SIDES}


def build_cache(
    model,
    rows: Sequence[Mapping[str, Any]],
    needs,
    directory,
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
    """Run the reference once over `rows`, write the cache to `directory` (replacing it) and open it.

    `needs`: a ReferenceNeeds or the objective options. rows: tokenized examples with ``input_ids``,
    ``labels`` (unshifted, IGNORE_INDEX = ignored), ``is_forget`` and a unique integer ``row_key``.
    Batches hold rows of similar length, at most
    `batch_size` rows and `max_tokens` padded tokens. `selector`: the model's AnswerHeadSelector (one is
    made, and removed afterwards, when None). `fingerprint` is stored in the header (default:
    :func:`cache_fingerprint` of the arguments).
    """
    t0 = time.time()
    needs = as_needs(needs)
    if not needs.cacheable:
        raise ValueError("this objective uses no reference log-probs: there is nothing to cache")
    keys = [int(r["row_key"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("row_key values must be unique")
    vocab = vocab_size(model)
    kinds = _resolve_kinds(needs, rows, vocab, mode, dtype, budget_gib, topk)
    dist_sides = {s for s, k in kinds.items() if k in ("full", "topk")}
    k = min(int(topk), vocab)
    fingerprint = fingerprint or cache_fingerprint(
        model, rows, needs, mode=mode, dtype=dtype, topk=topk, budget_gib=budget_gib
    )
    table, todo, n_tokens, n_vocab_rows = row_table(rows, needs, dist_sides)
    dist_kind = next((kinds[s] for s in SIDES if s in dist_sides), None)
    header: dict[str, Any] = {
        "format": FORMAT,
        "fingerprint": json_roundtrip(dict(fingerprint)),
        **kinds,
        "dtype": dtype,
        "vocab": vocab,
        "topk": k if dist_kind == "topk" else None,
        "n_rows": len(rows),
        "n_tokens": n_tokens,
        "n_vocab_rows": n_vocab_rows,
    }

    def fill(tmp: Path) -> None:
        np.save(tmp / "rows.npy", table)
        maps = _open_maps(tmp, dist_kind, dtype, n_tokens, n_vocab_rows, vocab, k)
        lengths = [len(rows[i]["input_ids"]) for i in todo]
        for group in bucket_batches(lengths, batch_size, max_tokens=max_tokens, longest_first=True):
            idx = [todo[b] for b in group]
            logits, targets, counts = reference_logits(model, selector, [rows[i] for i in idx], pad_token_id)
            _write_rows(maps, table, idx, logits, targets, counts, dist_kind, dtype, k)
        for mm in maps.values():
            if isinstance(mm, np.memmap):
                mm.flush()
        (tmp / HEADER).write_text(json.dumps(stamp(header, t0), indent=2, sort_keys=True))

    own_selector = selector is None
    selector = selector or AnswerHeadSelector(model)
    try:
        with reference_mode(model):
            atomic_dir(directory, fill)
    finally:
        if own_selector:
            selector.remove()
    log.info("reference cache built in %.1fs in %s", time.time() - t0, directory)
    return _open_built(directory)


def _open_built(directory) -> ReferenceCache:
    """The cache build_cache has just written to `directory` (one more in BUILD_COUNT)."""
    global BUILD_COUNT
    BUILD_COUNT += 1
    cache = ReferenceCache.open(directory)
    if cache is None:  # pragma: no cover - we just wrote it
        raise RuntimeError(f"could not read back the reference cache written to {directory}")
    return cache


def _open_maps(tmp: Path, dist_kind, dtype, n_tokens, n_vocab_rows, vocab, k) -> dict:
    storage = NP_STORAGE[dtype]
    maps = {"target": memmap_w(tmp / "target_logp.f32", np.float32, (n_tokens,))}
    if dist_kind == "full":
        maps["vocab"] = memmap_w(tmp / "vocab.bin", storage, (n_vocab_rows, vocab))
    elif dist_kind == "topk":
        maps["topk"] = memmap_w(tmp / "topk_logp.bin", storage, (n_vocab_rows, k))
        maps["idx"] = memmap_w(tmp / "topk_idx.i32", np.int32, (n_vocab_rows, k))
        maps["tail"] = memmap_w(tmp / "tail.f32", np.float32, (n_vocab_rows,))
    return maps


def _write_rows(maps, table, idx, logits, targets, counts, dist_kind, dtype, k) -> None:
    """Store one batch's rows: one row at a time, so at most one [T, V] float32 slice exists."""
    start = 0
    for i, n in zip(idx, counts):
        sl = slice(start, start + n)
        start += n
        logq = torch.log_softmax(logits[sl].float(), dim=-1)
        t_off = int(table[i, 3])
        maps["target"][t_off : t_off + n] = logq.gather(-1, targets[sl, None]).squeeze(-1).cpu().numpy()
        v_off = int(table[i, 4])
        if v_off < 0:
            continue
        if dist_kind == "full":
            maps["vocab"][v_off : v_off + n] = to_storage(logq, dtype)
        else:
            tv, ti, tt = losses.reference_topk(logits[sl], k)
            maps["topk"][v_off : v_off + n] = to_storage(tv, dtype)
            maps["idx"][v_off : v_off + n] = ti.to(torch.int32).cpu().numpy()
            maps["tail"][v_off : v_off + n] = tt.float().cpu().numpy()


# ----------------------------------------------------------------------------- open or build
def open_or_build(
    model,
    rows,
    needs,
    directory,
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
    (or reuses) its own deterministic copy in the sibling ``<directory>-rank<r>`` for r > 0.
    """
    needs = as_needs(needs)
    fp = cache_fingerprint(
        model, rows, needs, mode=mode, dtype=dtype, topk=topk, budget_gib=budget_gib, extra=extra
    )
    directory = Path(directory)

    def local() -> tuple[ReferenceCache, bool]:
        cache = ReferenceCache.open(directory, fp)
        if cache is not None:
            log.info("reusing the reference cache in %s", directory)
            return cache, False
        kw = dict(mode=mode, dtype=dtype, budget_gib=budget_gib, topk=topk, selector=selector, fingerprint=fp)
        return build_cache(
            model, rows, needs, directory, pad_token_id=pad_token_id, batch_size=batch_size, **kw
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

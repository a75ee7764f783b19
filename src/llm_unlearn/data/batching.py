"""Batch helpers shared by training, fine-tuning and evaluation: one padding rule, one length bucketing.

* ``IGNORE_INDEX`` (-100) marks a label position that no loss counts (prompt, padding), as
  ``torch.nn.functional.cross_entropy`` expects by default.
* ``pad_batch`` pads token lists to one width, on the right (training, scoring passes) or on the left
  (generation: every row's last real token sits in the last column).
* ``bucket_batches`` groups items of similar length so that a batch is padded little: in a seeded
  random order (training), or longest first (``length_batches``: one pass over fixed data, e.g. the
  reference cache and the evaluation, optionally in length buckets with ``max_padding``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "bucket_batches", "length_batches", "pad_batch", "padding_fraction"]


def pad_batch(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    *,
    side: str = "right",
    width: int | None = None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, W], attention_mask [B, W])`` (long) for token lists ``seqs``.

    ``W`` is the longest sequence (or ``width`` when given, which must not be shorter). ``side`` is
    ``"right"`` (tokens first, padding after) or ``"left"`` (padding first). Padding positions hold
    ``pad_id`` and attention 0; an empty sequence is a row of padding.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    longest = max(len(s) for s in seqs)
    width = longest if width is None else width
    if width < longest:
        raise ValueError(f"width {width} is shorter than the longest sequence ({longest})")
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, cols] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    max_padding: float | None = None,
) -> Iterator[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, longest first; with ``max_tokens`` a batch
    also stops growing when ``len(batch) * longest`` would exceed it (a single item always fits); with
    ``max_padding`` (a fraction in [0, 1)) a row joins a batch only when padding it to the batch's longest
    row adds at most that fraction of the longest length (length buckets: rows of very different length
    are not padded to each other)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_padding is not None and not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (
            len(batch) >= batch_size
            or (max_tokens is not None and (len(batch) + 1) * max(longest, 1) > max_tokens)
            or (max_padding is not None and longest - lengths[i] > max_padding * longest)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def bucket_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    max_tokens: int | None = None,
    seed: int = 0,
    longest_first: bool = False,
) -> list[list[int]]:
    """Batches of items of similar length, in a seeded random order (training) or longest first.

    Items are shuffled (seeded), then stably sorted by length (so equal-length items change partners from
    one seed to the next), and cut in that order into batches of at most ``batch_size`` items; with
    ``max_tokens`` a batch also stops growing before ``len(batch) * longest`` would exceed it (a single
    item always forms a batch). The batch order is then shuffled with the same seed. Every index appears
    in exactly one batch. ``longest_first``: no randomness: items sorted by decreasing length (ties by
    index), batches in that order (one pass over fixed data: the largest batch comes first, so a batch
    too large for the memory fails at once).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if longest_first:
        return list(length_batches(lengths, batch_size, max_tokens))
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in batch), default=0))
        if batch and (
            len(batch) >= batch_size or (max_tokens is not None and (len(batch) + 1) * longest > max_tokens)
        ):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded token slots that are padding, when each batch is padded to its longest item."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if slots == 0 else 1.0 - real / slots

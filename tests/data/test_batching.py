"""data/batching.py: the shared padding rule and length bucketing."""

from __future__ import annotations

import random

import pytest
import torch

from llm_unlearn.data.batching import IGNORE_INDEX, bucket_batches, pad_batch, padding_fraction


def test_ignore_index_is_cross_entropy_default():
    assert IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_batch_places_tokens_and_mask(side):
    seqs = [[5, 6, 7], [8], []]
    ids, mask = pad_batch(seqs, pad_id=0, side=side)
    assert ids.shape == mask.shape == (3, 3) and ids.dtype == mask.dtype == torch.long
    for row, s in enumerate(seqs):
        real = ids[row][mask[row].bool()].tolist()
        assert real == s
        assert int(mask[row].sum()) == len(s)
        cols = mask[row].nonzero().flatten().tolist()
        if s:  # contiguous, at the right end (left padding) or the start (right padding)
            expected = list(range(3 - len(s), 3)) if side == "left" else list(range(len(s)))
            assert cols == expected
    assert (ids[~mask.bool()] == 0).all()


def test_pad_batch_width_and_errors():
    ids, mask = pad_batch([[1, 2]], pad_id=9, width=4, side="right")
    assert ids.tolist() == [[1, 2, 9, 9]] and mask.tolist() == [[1, 1, 0, 0]]
    with pytest.raises(ValueError):
        pad_batch([[1, 2, 3]], pad_id=0, width=2)
    with pytest.raises(ValueError):
        pad_batch([], pad_id=0)
    with pytest.raises(ValueError):
        pad_batch([[1]], pad_id=0, side="middle")


def test_bucket_batches_partition_and_padding():
    lengths = [1, 50, 2, 49, 3, 48, 4, 47]
    batches = bucket_batches(lengths, batch_size=2, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len(b) <= 2 for b in batches)
    # sorted by length: each batch pairs neighbours, so padding is far below the unsorted pairing
    assert padding_fraction(lengths, batches) < padding_fraction(lengths, [[0, 1], [2, 3], [4, 5], [6, 7]])
    assert bucket_batches(lengths, 2, seed=3) == batches
    capped = bucket_batches(lengths, batch_size=8, max_tokens=100, seed=0)
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in capped)


# ----------------------------------------------------------------------------------------- buckets (from test_finetune)
def test_bucket_batches_cover_every_item_once_and_waste_less_padding():
    rng = random.Random(3)
    lengths = [max(4, int(rng.lognormvariate(4.5, 0.7))) for _ in range(300)]  # 16 to 640 tokens
    batches = bucket_batches(lengths, 16, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(1 <= len(b) <= 16 for b in batches)
    bucketed = padding_fraction(lengths, batches)
    # one global pad (every batch padded to the longest text, as the old demo trainer did)
    global_pad = 1 - sum(lengths) / (len(lengths) * max(lengths))
    order = list(range(300))
    rng.shuffle(order)
    random_batches = [order[k : k + 16] for k in range(0, 300, 16)]
    assert bucketed < padding_fraction(lengths, random_batches) < global_pad
    # pure Python and seeded, so these are the same everywhere: 0.118 bucketed, 0.656 random, 0.815 global
    assert bucketed < 0.2 and bucketed < padding_fraction(lengths, random_batches) / 4
    # seeded: the same seed gives the same batches, another seed another order
    assert bucket_batches(lengths, 16, seed=0) == batches
    assert bucket_batches(lengths, 16, seed=1) != batches
    # a token cap: len(batch) * longest <= cap unless the batch is a single item
    capped = bucket_batches(lengths, 16, max_tokens=1000, seed=0)
    assert sorted(i for b in capped for i in b) == list(range(300))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000 for b in capped)
    with pytest.raises(ValueError):
        bucket_batches(lengths, 0)


def test_bucket_batches_longest_first_is_deterministic_and_ordered():
    lengths = [3, 9, 9, 1, 5, 7]
    batches = bucket_batches(lengths, batch_size=2, longest_first=True)
    assert batches == [[1, 2], [5, 4], [0, 3]]  # decreasing length, ties by index, batches in that order
    assert bucket_batches(lengths, batch_size=8, max_tokens=20, longest_first=True) == [
        [1, 2],
        [5, 4],
        [0, 3],
    ]

"""data/batching.py: the shared padding rule and length bucketing."""

from __future__ import annotations

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

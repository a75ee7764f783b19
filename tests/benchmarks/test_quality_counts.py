"""benchmarks/quality.py: --nonmembers, --holdout and --anchor come from one pool of non-members; asking
for more than it holds is one clear error, not a silently smaller holdout or no anchor at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load

REPO = Path(__file__).resolve().parents[2]


def _quality():
    return load("quality")


def test_sets_that_fit_pass_and_each_short_one_is_named():
    q = _quality()
    q.short_of_nonmembers(54, 54, 96, 96, 0, 0)  # the organizers' 150: 54 + 96
    q.short_of_nonmembers(24, None, 48, 48, 0, 0)  # None: as many as members
    with pytest.raises(ValueError, match=r"--anchor 0 of 48 \(the pool holds 150"):
        q.short_of_nonmembers(54, 54, 96, 96, 0, 48)
    with pytest.raises(ValueError, match=r"--holdout 46 of 96, --anchor 0 of 32"):
        q.short_of_nonmembers(104, 104, 46, 96, 0, 32)

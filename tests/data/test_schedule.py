import random

import pytest

from llm_unlearn.data.schedule import (
    plan_chunks,
    retain_count,
    retain_cursor_after,
    retain_visits,
    summarize_plan,
)
from llm_unlearn.errors import ConfigError

F = "forget"
R = "retain"


def test_remainder_chunk_and_interleaving():
    plan = plan_chunks(n_forget=5, n_retain=10, chunk_size=2, retain_per_forget=1)
    assert plan == [
        [(F, 0), (R, 0), (F, 1), (R, 1)],
        [(F, 2), (R, 2), (F, 3), (R, 3)],
        [(F, 4), (R, 4)],
    ]


def test_retain_wraps_around_across_chunks():
    plan = plan_chunks(n_forget=4, n_retain=3, chunk_size=2, retain_per_forget=2)
    assert plan == [
        [(F, 0), (R, 0), (R, 1), (F, 1), (R, 2), (R, 0)],
        [(F, 2), (R, 1), (R, 2), (F, 3), (R, 0), (R, 1)],
    ]
    assert retain_cursor_after(plan, 3, -1) == 0
    assert retain_cursor_after(plan, 3, 0) == 1
    assert retain_cursor_after(plan, 3, 1) == 2
    assert retain_visits(plan, 3) == [3, 3, 2]


def test_ratio_zero_is_forget_only():
    plan = plan_chunks(n_forget=3, n_retain=5, chunk_size=2, retain_per_forget=0)
    assert plan == [[(F, 0), (F, 1)], [(F, 2)]]
    # an empty retain set is fine without retain rows
    assert plan_chunks(3, 0, 2, 0) == plan
    assert plan_chunks(3, 0, 2, 0, split_retain=False) == plan
    assert retain_visits(plan, 5) == [0] * 5


def test_leftover_retain_rows_go_to_the_end():
    # f=2, ratio 1.5 -> m=3, k=1, one leftover; f=1 (last chunk) -> m=round(1.5)=2, k=2
    plan = plan_chunks(n_forget=3, n_retain=4, chunk_size=2, retain_per_forget=1.5)
    assert plan == [
        [(F, 0), (R, 0), (F, 1), (R, 1), (R, 2)],
        [(F, 2), (R, 3), (R, 0)],
    ]
    # ratio below 1: k=0, all retain rows after the forget rows (m = round(4*0.5) = 2)
    assert plan_chunks(4, 10, 4, 0.5) == [[(F, 0), (F, 1), (F, 2), (F, 3), (R, 0), (R, 1)]]


def test_float_ratio_rounding():
    assert retain_count(3, 0.5) == 2  # round(1.5) -> 2 (half to even)
    assert retain_count(5, 0.5) == 2  # round(2.5) -> 2 (half to even)
    assert retain_count(3, 2) == 6
    assert retain_count(3, 2.0) == 6


def test_not_split_uses_seeded_permutations():
    plan = plan_chunks(n_forget=5, n_retain=4, chunk_size=2, retain_per_forget=1, split_retain=False, seed=7)
    rng = random.Random(7)
    perms = []
    for _ in range(3):
        p = list(range(4))
        rng.shuffle(p)
        perms.append(p)
    p0, p1, p2 = perms
    assert plan == [
        [(F, 0), (R, p0[0]), (R, p0[1]), (F, 1), (R, p0[2]), (R, p0[3])],
        [(F, 2), (R, p1[0]), (R, p1[1]), (F, 3), (R, p1[2]), (R, p1[3])],
        [(F, 4), (R, p2[0]), (R, p2[1]), (R, p2[2]), (R, p2[3])],
    ]
    for chunk in plan:
        assert sorted(r for k, r in chunk if k == R) == [0, 1, 2, 3]
    assert retain_visits(plan, 4) == [3, 3, 3, 3]


def test_not_split_deterministic_per_seed():
    a = plan_chunks(6, 20, 3, 2, split_retain=False, seed=1)
    b = plan_chunks(6, 20, 3, 2, split_retain=False, seed=1)
    c = plan_chunks(6, 20, 3, 2, split_retain=False, seed=2)
    assert a == b
    assert a != c
    # a new permutation per chunk
    assert [r for k, r in a[0] if k == R] != [r for k, r in a[1] if k == R]
    for chunk in a + c:
        assert sorted(r for k, r in chunk if k == R) == list(range(20))


def test_split_plan_ignores_seed():
    assert plan_chunks(5, 7, 2, 3, seed=1) == plan_chunks(5, 7, 2, 3, seed=99)


def test_non_sequential_single_chunk():
    plan = plan_chunks(n_forget=3, n_retain=10, chunk_size=1, retain_per_forget=2, sequential=False)
    assert plan == [[(F, 0), (R, 0), (R, 1), (F, 1), (R, 2), (R, 3), (F, 2), (R, 4), (R, 5)]]
    plan = plan_chunks(3, 2, 1, 1, split_retain=False, sequential=False, seed=0)
    assert len(plan) == 1
    # m = n_retain = 2 < f = 3, so k = 0 and both retain rows come last
    assert [k for k, _ in plan[0]] == [F, F, F, R, R]
    assert [r for k, r in plan[0] if k == F] == [0, 1, 2]


def test_summaries():
    plan = plan_chunks(5, 10, 2, 1)
    assert summarize_plan(plan) == [
        {"index": 0, "n_forget": 2, "n_retain": 2, "first_forget_row": 0, "last_forget_row": 1},
        {"index": 1, "n_forget": 2, "n_retain": 2, "first_forget_row": 2, "last_forget_row": 3},
        {"index": 2, "n_forget": 1, "n_retain": 1, "first_forget_row": 4, "last_forget_row": 4},
    ]
    assert retain_cursor_after(plan, 10, 2) == 5
    with pytest.raises(ConfigError):
        retain_cursor_after(plan, 10, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_forget=5, n_retain=5, chunk_size=0, retain_per_forget=1), "chunk_size"),
        (dict(n_forget=5, n_retain=5, chunk_size=-2, retain_per_forget=1), "chunk_size"),
        (dict(n_forget=5, n_retain=5, chunk_size=2, retain_per_forget=-1), "retain_per_forget"),
        (dict(n_forget=5, n_retain=5, chunk_size=2, retain_per_forget=-0.5), "retain_per_forget"),
        (dict(n_forget=5, n_retain=5, chunk_size=2, retain_per_forget=float("nan")), "retain_per_forget"),
        (dict(n_forget=0, n_retain=5, chunk_size=2, retain_per_forget=1), "forget"),
        (dict(n_forget=-1, n_retain=5, chunk_size=2, retain_per_forget=1), "forget"),
        (dict(n_forget=5, n_retain=-1, chunk_size=2, retain_per_forget=1), "n_retain"),
        (dict(n_forget=5, n_retain=0, chunk_size=2, retain_per_forget=1), "needs retain rows"),
        (
            dict(n_forget=5, n_retain=0, chunk_size=2, retain_per_forget=1, split_retain=False),
            "needs retain rows",
        ),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        plan_chunks(**kwargs)


def test_property_random_sizes():
    rng = random.Random(1234)
    for _ in range(500):
        n_forget = rng.randint(1, 60)
        n_retain = rng.randint(1, 40)
        chunk_size = rng.randint(1, 20)
        ratio = rng.choice([0, 1, 2, 3, 0.5, 1.5, 2.25])
        split = rng.random() < 0.7
        sequential = rng.random() < 0.8
        plan = plan_chunks(
            n_forget,
            n_retain,
            chunk_size,
            ratio,
            split_retain=split,
            seed=rng.randint(0, 9),
            sequential=sequential,
        )
        forget_rows = [r for chunk in plan for k, r in chunk if k == F]
        assert forget_rows == list(range(n_forget))
        step = chunk_size if sequential else n_forget
        sizes = [sum(1 for k, _ in chunk if k == F) for chunk in plan]
        assert len(plan) == -(-n_forget // step)
        assert all(s == step for s in sizes[:-1])
        assert 1 <= sizes[-1] <= step
        for chunk, f in zip(plan, sizes):
            n_ret = sum(1 for k, _ in chunk if k == R)
            if ratio == 0:
                assert n_ret == 0
            elif split:
                assert n_ret == retain_count(f, ratio)
            else:
                assert sorted(r for k, r in chunk if k == R) == list(range(n_retain))
            assert all(0 <= r < n_retain for k, r in chunk if k == R)
            assert chunk[0][0] == F
            # interleaving: k retain rows after each forget row, leftovers at the end
            kk = n_ret // f
            expected_kinds = ([F] + [R] * kk) * f + [R] * (n_ret - kk * f)
            assert [k for k, _ in chunk] == expected_kinds
        if split and ratio:
            # the split retain set is consumed cyclically: concatenation is 0, 1, 2, ... mod n_retain
            seq = [r for chunk in plan for k, r in chunk if k == R]
            assert seq == [i % n_retain for i in range(len(seq))]
            assert sum(retain_visits(plan, n_retain)) == len(seq)


def test_revisit_last_puts_every_forget_row_in_the_last_chunk():
    from llm_unlearn.data.schedule import FORGET, RETAIN, plan_chunks, revisit_last

    plan = plan_chunks(7, 20, 3, 2)
    out = revisit_last(plan)
    assert out[:-1] == plan[:-1]  # the earlier chunks are untouched
    last = out[-1]
    assert [r for k, r in last if k == FORGET] == list(range(7))  # all forget rows, in plan order
    assert [r for k, r in last if k == RETAIN] == [r for k, r in plan[-1] if k == RETAIN]
    # the same interleaving: each forget row followed by retain // forget retain rows
    k = len([1 for kk, _ in last if kk == RETAIN]) // 7
    assert last[: k + 1] == [(FORGET, 0)] + [
        (RETAIN, r) for r in [r for kk, r in plan[-1] if kk == RETAIN][:k]
    ]
    one = plan_chunks(3, 5, 10, 1)
    assert revisit_last(one) == one  # nothing earlier to revisit
    assert plan == plan_chunks(7, 20, 3, 2)  # the input is not modified

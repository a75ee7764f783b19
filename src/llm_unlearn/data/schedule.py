"""The sequential unlearning schedule (AILS-NTUA / Clausen 2025): which rows each chunk trains on.

A *plan* is a list of chunks; each chunk is the ordered list of ``(kind, row)`` pairs it trains on,
``kind`` being ``"forget"`` or ``"retain"`` and ``row`` the 0-based index into that split's file.

Rules (see :func:`plan_chunks`):

* The forget rows, in file order, are cut into chunks of ``chunk_size``; the remainder is a last,
  smaller chunk. With ``sequential=False`` there is a single chunk holding every forget row.
* A chunk of ``f`` forget rows takes ``m`` retain rows:

  - ``split_retain=True``: ``m = f * retain_per_forget`` (``int(round(...))`` for a float ratio; Python's
    ``round`` rounds halves to even), taken cyclically from a cursor that starts at 0, carries over
    from one chunk to the next and wraps modulo ``n_retain``;
  - ``split_retain=False``: every chunk takes *all* retain rows (``m = n_retain``) in a seeded
    permutation. One ``random.Random(seed)`` generator is created per plan and each chunk draws a
    fresh permutation from it, so chunk 0 gets the first shuffle, chunk 1 the second, and so on.

* Order inside a chunk: with ``k = m // f``, every forget row is followed by the next ``k`` retain
  rows; the ``m - k*f`` leftover retain rows come at the end of the chunk.
* ``retain_per_forget == 0`` means forget rows only (in both modes).

Pure Python; no torch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from llm_unlearn.errors import ConfigError

FORGET = "forget"
RETAIN = "retain"

Chunk = list[tuple[str, int]]

__all__ = [
    "FORGET",
    "RETAIN",
    "Chunk",
    "ChunkPlanSummary",
    "plan_chunks",
    "retain_count",
    "retain_cursor_after",
    "retain_visits",
    "revisit_last",
    "summarize_plan",
]


def retain_count(n_forget_in_chunk: int, retain_per_forget: int | float) -> int:
    """Retain rows a chunk of ``n_forget_in_chunk`` forget rows takes when the retain set is split."""
    if isinstance(retain_per_forget, int):
        return n_forget_in_chunk * retain_per_forget
    return int(round(n_forget_in_chunk * retain_per_forget))


def _validate(n_forget: int, n_retain: int, chunk_size: int, retain_per_forget: int | float) -> None:
    if isinstance(n_forget, bool) or not isinstance(n_forget, int) or n_forget <= 0:
        raise ConfigError(f"the forget set must hold at least one row (got n_forget={n_forget!r})")
    if isinstance(n_retain, bool) or not isinstance(n_retain, int) or n_retain < 0:
        raise ConfigError(f"n_retain must be an integer >= 0 (got {n_retain!r})")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive integer (got {chunk_size!r})")
    if isinstance(retain_per_forget, bool) or not isinstance(retain_per_forget, (int, float)):
        raise ConfigError(f"retain_per_forget must be a number >= 0 (got {retain_per_forget!r})")
    if retain_per_forget != retain_per_forget or retain_per_forget in (float("inf"), float("-inf")):
        raise ConfigError(f"retain_per_forget must be a finite number >= 0 (got {retain_per_forget!r})")
    if retain_per_forget < 0:
        raise ConfigError(f"retain_per_forget must be >= 0 (got {retain_per_forget!r})")
    if retain_per_forget > 0 and n_retain == 0:
        raise ConfigError(
            f"retain_per_forget > 0 needs retain rows, but the retain set is empty "
            f"(retain_per_forget={retain_per_forget!r}); give a retain set or use retain_per_forget 0"
        )


def _interleave(forget_rows: Sequence[int], retain_rows: Sequence[int]) -> Chunk:
    f = len(forget_rows)
    m = len(retain_rows)
    k = m // f
    out: Chunk = []
    pos = 0
    for row in forget_rows:
        out.append((FORGET, row))
        for r in retain_rows[pos : pos + k]:
            out.append((RETAIN, r))
        pos += k
    for r in retain_rows[pos:]:
        out.append((RETAIN, r))
    return out


def plan_chunks(
    n_forget: int,
    n_retain: int,
    chunk_size: int,
    retain_per_forget: int | float,
    split_retain: bool = True,
    seed: int = 0,
    sequential: bool = True,
) -> list[Chunk]:
    """Plan the chunks of a sequential unlearning run (rules in the module docstring).

    Args:
        n_forget: rows in the forget file (> 0).
        n_retain: rows in the retain file (>= 0; must be > 0 when ``retain_per_forget > 0``).
        chunk_size: forget rows per chunk (> 0); ignored when ``sequential`` is False.
        retain_per_forget: retain rows per forget row (>= 0) when ``split_retain`` is True; with
            ``split_retain=False`` only ``0`` (no retain rows) vs. ``> 0`` (all retain rows) matters.
        split_retain: split the retain set over the chunks (cyclic cursor) instead of giving every
            chunk the whole retain set.
        seed: seeds the per-chunk permutations used when ``split_retain`` is False.
        sequential: False puts every forget row in one chunk (``--no-sequential``).

    Returns:
        ``chunks[c]`` = ordered ``[("forget"|"retain", row), ...]`` for chunk ``c``.

    Raises:
        ConfigError: on a non-positive ``chunk_size`` or ``n_forget``, a negative ``retain_per_forget``
            or ``n_retain``, or ``retain_per_forget > 0`` with an empty retain set.
    """
    _validate(n_forget, n_retain, chunk_size, retain_per_forget)
    step = chunk_size if sequential else n_forget
    forget_chunks = [list(range(start, min(start + step, n_forget))) for start in range(0, n_forget, step)]

    rng = random.Random(seed)
    cursor = 0
    plan: list[Chunk] = []
    for forget_rows in forget_chunks:
        if retain_per_forget == 0:
            retain_rows: list[int] = []
        elif split_retain:
            m = retain_count(len(forget_rows), retain_per_forget)
            retain_rows = [(cursor + i) % n_retain for i in range(m)]
            cursor = (cursor + m) % n_retain
        else:
            retain_rows = list(range(n_retain))
            rng.shuffle(retain_rows)
        plan.append(_interleave(forget_rows, retain_rows))
    return plan


def revisit_last(plan: Sequence[Chunk]) -> list[Chunk]:
    """The plan with a last chunk that revisits every earlier chunk's forget rows: its forget rows are
    all the plan's, in plan order, and its retain rows its own, in the same interleaving
    (:func:`_interleave`). A one-chunk plan is returned as it is. The calibration's gate decides, row
    by row, which of them are pushed (``calibration.revisit``): units forgotten in an earlier chunk that
    relapsed while later chunks trained are pushed back before the run stops."""
    plan = [list(c) for c in plan]
    if len(plan) < 2:
        return plan
    forget_rows = [row for chunk in plan for kind, row in chunk if kind == FORGET]
    retain_rows = [row for kind, row in plan[-1] if kind == RETAIN]
    plan[-1] = _interleave(forget_rows, retain_rows)
    return plan


@dataclass(frozen=True)
class ChunkPlanSummary:
    """One chunk of a plan, in numbers (for logs, ``plan`` output and resume state)."""

    index: int
    n_forget: int
    n_retain: int
    first_forget_row: int | None
    last_forget_row: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_plan(chunks: Sequence[Chunk]) -> list[dict]:
    """Per chunk: ``index``, ``n_forget``, ``n_retain``, ``first_forget_row``, ``last_forget_row``."""
    out = []
    for i, chunk in enumerate(chunks):
        forget_rows = [row for kind, row in chunk if kind == FORGET]
        n_ret = sum(1 for kind, _ in chunk if kind == RETAIN)
        out.append(
            ChunkPlanSummary(
                index=i,
                n_forget=len(forget_rows),
                n_retain=n_ret,
                first_forget_row=forget_rows[0] if forget_rows else None,
                last_forget_row=forget_rows[-1] if forget_rows else None,
            ).to_dict()
        )
    return out


def retain_cursor_after(chunks: Sequence[Chunk], n_retain: int, chunk_index: int) -> int:
    """The retain cursor once chunk ``chunk_index`` (0-based) has been planned.

    Meaningful for ``split_retain=True`` plans: the next chunk starts taking retain rows there.
    ``chunk_index = -1`` gives the starting cursor, 0. Returns 0 when ``n_retain`` is 0.
    """
    if not -1 <= chunk_index < len(chunks):
        raise ConfigError(f"chunk index {chunk_index} is outside the plan (0..{len(chunks) - 1})")
    if n_retain <= 0:
        return 0
    taken = sum(1 for chunk in chunks[: chunk_index + 1] for kind, _ in chunk if kind == RETAIN)
    return taken % n_retain


def retain_visits(chunks: Sequence[Chunk], n_retain: int) -> list[int]:
    """How often each retain row is visited in one pass over the whole plan (``len == n_retain``)."""
    visits = [0] * n_retain
    for chunk in chunks:
        for kind, row in chunk:
            if kind == RETAIN:
                if not 0 <= row < n_retain:
                    raise ConfigError(f"retain row {row} is outside 0..{n_retain - 1}")
                visits[row] += 1
    return visits

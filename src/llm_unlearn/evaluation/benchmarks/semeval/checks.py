"""Input checks of the SemEval-2025 Task 4 evaluation: usable MIA sets, and warnings about noisy scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["MIN_ITEMS_PER_TASK", "MIN_MIA_DOCUMENTS", "check_mia_sets", "sanity_warnings"]

# Below these counts a score is too noisy to mean much: a warning (in the log and in report.md) says so.
MIN_ITEMS_PER_TASK = 5  # items of one split, task and kind (sc / qa): one per term of the 12
MIN_MIA_DOCUMENTS = 10  # members, and non-members, for the loss-attack AUC


def check_mia_sets(members: Sequence[Mapping[str, str]], nonmembers: Sequence[Mapping[str, str]]) -> None:
    """Refuse (UserError) MIA sets an AUC cannot be computed from: a side is empty, or a document (by
    id or by text) is both a member and a non-member."""
    from llm_unlearn.errors import UserError

    if not members or not nonmembers:
        raise UserError(
            f"the MIA data has {len(members)} member and {len(nonmembers)} non-member documents; "
            "both are needed"
        )
    both_ids = {d["id"] for d in members} & {d["id"] for d in nonmembers}
    both_docs = {d["document"] for d in members} & {d["document"] for d in nonmembers}
    if both_ids or both_docs:
        example = sorted(both_ids)[0] if both_ids else repr(sorted(both_docs)[0][:40])
        raise UserError(
            f"the MIA member and non-member sets overlap ({len(both_ids)} id(s), {len(both_docs)} "
            f"document text(s) in both, e.g. {example}): the AUC would be meaningless"
        )


def sanity_warnings(bundle, mia=None) -> list[str]:
    """Warnings about input that gives scores of little meaning: a missing split, a task with fewer
    than MIN_ITEMS_PER_TASK items of a kind, fewer than MIN_MIA_DOCUMENTS MIA documents a side."""
    from llm_unlearn.data.records import record_kind

    out = []
    for split in ("forget", "retain"):
        recs = list(getattr(bundle, split))
        if not recs:
            out.append(f"the {split} split is missing: its scores and the task aggregate are not meaningful")
            continue
        counts: dict[tuple[str, str], int] = {}
        for r in recs:
            kind = record_kind(r.id)
            if kind is not None:
                counts[(r.task or "(no task)", kind)] = counts.get((r.task or "(no task)", kind), 0) + 1
        few = sorted(f"{t}/{k}: {n}" for (t, k), n in counts.items() if n < MIN_ITEMS_PER_TASK)
        if few:
            out.append(
                f"{split} split: fewer than {MIN_ITEMS_PER_TASK} items for {', '.join(few)}: those scores "
                "are very noisy"
            )
    if mia is not None:
        m, n = len(mia[0]), len(mia[1])
        if min(m, n) < MIN_MIA_DOCUMENTS:
            out.append(
                f"MIA: {m} member and {n} non-member documents (fewer than {MIN_MIA_DOCUMENTS} a side): "
                "the AUC is very noisy"
            )
    return out

"""The retain model's TOFU items (``--retain-reference``): read and checked against this evaluation's
forget set (forget quality and privleak compare with it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_unlearn.data.benchmarks import TofuData, read_objects
from llm_unlearn.errors import DataError, UserError

SETS = ("forget", "retain", "real_authors", "world_facts", "holdout")


def read_retain_reference(path: str | Path) -> dict[str, Any]:
    """The retain model's ``tofu_items.jsonl``: its forget truth ratios (and questions, to check that
    both were evaluated on the same forget set) and Min-K scores of forget and holdout."""
    path = Path(path)
    out: dict[str, Any] = {"path": str(path), "forget": {}, "holdout": {}}
    for line, row in read_objects(path):
        if not isinstance(row, dict):
            raise DataError(path, "expected a JSON object", line=line)
        s = row.get("set")
        if s not in SETS:
            raise DataError(path, f"expected one of {', '.join(SETS)}, got {s!r}", line=line, field="set")
        if s not in ("forget", "holdout"):
            continue
        index = row.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise DataError(path, "expected a non-negative integer", line=line, field="index")
        fields = ("truth_ratio", "min_k") if s == "forget" else ("min_k",)
        entry = {"question": row.get("question")}
        for f in fields:
            v = row.get(f)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise DataError(path, "expected a number", line=line, field=f)
            entry[f] = float(v)
        out[s][index] = entry
    if not out["forget"]:
        raise DataError(path, "no forget rows (set = forget) with a truth_ratio")
    return out


def _check_reference(reference: Mapping[str, Any], data: TofuData) -> None:
    forget = reference["forget"]
    if sorted(forget) != list(range(len(data.forget))):
        raise UserError(
            f"{reference['path']}: the retain reference has {len(forget)} forget items, this evaluation "
            f"{len(data.forget)}; evaluate the retain model on the same --forget-split"
        )
    for i, item in enumerate(data.forget):
        q = forget[i].get("question")
        if q is not None and q != item.question:
            raise UserError(
                f"{reference['path']}: forget item {i} is a different question; same --forget-split needed"
            )

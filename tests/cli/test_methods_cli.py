"""`llm-unlearn methods` and the method list of `train --help`: every registered method, its summary,
source, own defaults and reference needs, all from `cli.methods.method_rows()`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llm_unlearn.cli import main
from llm_unlearn.cli.methods import format_table, method_listing, method_rows
from llm_unlearn.config.presets import METHOD_DEFAULTS
from llm_unlearn.train.methods import OBJECTIVES

README = Path(__file__).resolve().parents[2] / "README.md"
KEYS = {"name", "summary", "source", "terms", "needs_reference", "defaults"}


def _readme_methods() -> dict[str, list[str]]:
    """The README's Methods table: method name -> its cells."""
    text = README.read_text()
    table = text[text.index("| `--method` |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows[re.match(r"`(\w+)`", cells[0]).group(1)] = cells
    return rows


def test_one_row_per_registered_method_in_the_describe_shape():
    rows = method_rows()
    assert [r["name"] for r in rows] == list(OBJECTIVES)
    for r in rows:
        assert set(r) == KEYS, r["name"]
        assert r["summary"] and "\n" not in r["summary"], r["name"]
        assert r["summary"] == OBJECTIVES[r["name"]].summary
        assert r["terms"] == list(OBJECTIVES[r["name"]].terms)
        assert r["defaults"] == METHOD_DEFAULTS.get(r["name"], {})
        assert isinstance(r["needs_reference"], bool)
    json.dumps(rows)  # plain data


def test_sources_and_reference_needs_agree_with_the_readme():
    readme = _readme_methods()
    assert set(readme) == set(OBJECTIVES)
    for r in method_rows():
        cells = readme[r["name"]]
        # the README writes code names in backticks and open-unlearning as OU; otherwise the same text
        readme_source = cells[2].replace("`", "").replace("OU ", "open-unlearning ")
        assert r["source"] == readme_source, r["name"]
        assert cells[4].startswith("yes" if r["needs_reference"] else "no"), (r["name"], cells[4])


def test_methods_command_table_and_json(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip("\n") == format_table(method_rows())
    for r in method_rows():
        line = next(x for x in out.splitlines() if x.startswith(r["name"] + " "))
        assert r["summary"] in line and line.split()[1] == ("yes" if r["needs_reference"] else "no")
    assert "npo_beta=0.1" in out and "Zhang et al. 2024" in out
    assert main(["methods", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == method_rows()


def test_train_help_lists_every_method_with_its_summary(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--forget-weight" in out and out.rstrip("\n").endswith(method_listing())
    for name, objective in OBJECTIVES.items():
        assert re.search(rf"^  {name} +{re.escape(objective.summary)}$", out, re.M), name

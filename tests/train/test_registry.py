"""The method registry: one entry per method file, in configuration's order, with its metadata."""

from __future__ import annotations

import pytest

from llm_unlearn.config import CHOICES, build_config
from llm_unlearn.config.presets import METHOD_DEFAULTS, METHOD_NAMES
from llm_unlearn.train import methods, registry


def test_the_registry_holds_configurations_method_names_in_order():
    assert tuple(methods.OBJECTIVES) == METHOD_NAMES == CHOICES["objective.method"]
    assert set(METHOD_DEFAULTS) <= set(METHOD_NAMES)


def test_describe_gives_every_method_with_its_metadata():
    described = methods.describe()
    assert [d["name"] for d in described] == list(METHOD_NAMES)
    for d in described:
        assert set(d) == {"name", "summary", "source", "terms", "needs_reference", "defaults"}
        assert d["summary"] and "\n" not in d["summary"], d["name"]
        assert d["source"], d["name"]
        assert d["terms"] == list(methods.get(d["name"]).terms)
        assert d["defaults"] == METHOD_DEFAULTS.get(d["name"], {})
        # needs_reference: what the method needs under its own defaults, as a run would build it
        cfg = build_config(overrides={"objective.method": d["name"], "objective.alternatives": "retain"})
        assert d["needs_reference"] == methods.needs_of(cfg.objective).any, d["name"]
    by_name = {d["name"]: d for d in described}
    assert by_name["npo_rt_div"]["needs_reference"] and not by_name["simnpo"]["needs_reference"]
    assert by_name["rmu"]["needs_reference"]  # the frozen model's hidden states


def test_describe_returns_copies():
    rmu = next(d for d in methods.describe() if d["name"] == "rmu")
    rmu["defaults"]["lora.target_modules"].append("x")
    assert METHOD_DEFAULTS["rmu"]["lora.target_modules"] == ["down_proj"]


def test_the_registry_refuses_to_answer_before_every_method_is_registered(monkeypatch):
    monkeypatch.setattr(registry, "_complete", False)
    with pytest.raises(RuntimeError, match="llm_unlearn.train.methods"):
        registry.get("npo")
    with pytest.raises(RuntimeError):
        registry.all_terms()


def test_registration_done_refuses_a_method_configuration_does_not_know(monkeypatch):
    monkeypatch.setattr(registry, "OBJECTIVES", {**registry.OBJECTIVES, "extra": registry.OBJECTIVES["npo"]})
    with pytest.raises(RuntimeError, match="extra"):
        registry.registration_done()


def test_a_method_is_registered_once():
    with pytest.raises(ValueError, match="twice"):
        registry.register("npo", terms=("npo",), source="-")(lambda step, o: {})

"""The method registry: what each unlearning method is, and how the trainer looks it up.

A method is one function ``fn(step, options) -> {term: TermValue}`` (``train/methods/<name>.py``)
registered with :func:`register`: its name, the terms it produces, what it needs from the reference,
a one-line summary and its source. It reads a :class:`~llm_unlearn.train.step.Step` (the model's
answer-token log-probs and logits of one batch, which rows are forget rows, the reference on request);
the formulas live in :mod:`llm_unlearn.losses`; the driver that builds the step, applies the
calibration gate, sums the weighted terms and checks them is ``train/loss.py``.

This module holds the registry only; it imports no method. Look methods up through
:mod:`llm_unlearn.train.methods`, which imports every method file and then re-exports :data:`OBJECTIVES`,
:func:`get`, :func:`needs_of`, :func:`as_needs`, :func:`all_terms` and :func:`describe` (here they
refuse to answer before that import has finished, rather than answer from a half-filled registry).

Configuration knows the methods as plain names and defaults (``config/presets.py``: ``METHOD_NAMES``,
``METHOD_DEFAULTS``), so that it never imports training code; the registry checks once, when every
method is registered, that it holds exactly those names, and keeps them in that order.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_unlearn.config.options import ObjectiveOptions
from llm_unlearn.config.presets import METHOD_DEFAULTS, METHOD_NAMES
from llm_unlearn.errors import ConfigError
from llm_unlearn.train import terms as T
from llm_unlearn.train.step import ReferenceNeeds, Step, TermValue

Compute = Callable[[Step, object], dict[str, TermValue]]


@dataclass(frozen=True)
class Objective:
    name: str
    compute: Compute
    needs: Callable[[object], ReferenceNeeds]
    terms: tuple[str, ...]
    summary: str
    source: str  # the paper / code it follows (the README's Methods table says the same)
    capture_layer: Callable | None = None  # (options, model) -> index of the decoder layer to capture
    alternatives: bool = False  # needs an alternative answer per forget row (alt_input_ids / alt_labels)
    train_layers: Callable | None = (
        None  # (options, model) -> the decoder layers the method trains (None: all)
    )


OBJECTIVES: dict[str, Objective] = {}
_complete = False  # set by registration_done(), called by llm_unlearn.train.methods


def register(
    name: str,
    *,
    terms: tuple[str, ...],
    source: str,
    summary: str = "",
    needs=None,
    capture_layer=None,
    alternatives: bool = False,
    train_layers=None,
):
    """Register `fn(step, options) -> {term: TermValue}` as the method `name`.

    `terms`: the term names it may return; `source`: the paper or code it follows; `summary`: one line
    (default: the first line of the function's docstring); `needs(options)` says what the reference
    must provide (default: nothing); `capture_layer(options, model)` asks for the output of one
    decoder layer in `step.hidden`; `alternatives` for an alternative answer per forget row;
    `train_layers(options, model)` names the only decoder layers the method trains."""

    def wrap(fn: Compute) -> Compute:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        OBJECTIVES[name] = Objective(
            name=name,
            compute=fn,
            needs=needs or (lambda o: ReferenceNeeds()),
            terms=tuple(terms),
            summary=summary or (fn.__doc__ or "").strip().splitlines()[0],
            source=source,
            capture_layer=capture_layer,
            alternatives=alternatives,
            train_layers=train_layers,
        )
        return fn

    return wrap


def registration_done() -> None:
    """Called once by :mod:`llm_unlearn.train.methods` after importing every method: from now on the
    registry answers. Checks that it holds exactly configuration's method names and puts them in that
    order (the order of ``--method``'s choices and of the log columns), whatever the import order."""
    global _complete
    if set(OBJECTIVES) != set(METHOD_NAMES):
        raise RuntimeError(
            "the registered methods differ from config/presets.py METHOD_NAMES: registered only "
            f"{sorted(set(OBJECTIVES) - set(METHOD_NAMES))}, configured only "
            f"{sorted(set(METHOD_NAMES) - set(OBJECTIVES))}"
        )
    ordered = {name: OBJECTIVES[name] for name in METHOD_NAMES}
    OBJECTIVES.clear()
    OBJECTIVES.update(ordered)
    _complete = True


def _registered() -> dict[str, Objective]:
    if not _complete:
        raise RuntimeError("the methods are not loaded: look them up through llm_unlearn.train.methods")
    return OBJECTIVES


def get(name: str) -> Objective:
    objectives = _registered()
    if name not in objectives:
        raise ConfigError(f"unknown objective.method {name!r} (known: {', '.join(objectives)})")
    return objectives[name]


def needs_of(options) -> ReferenceNeeds:
    """What the configured objective needs from the reference model."""
    return get(options.method).needs(options)


def as_needs(x) -> ReferenceNeeds:
    """`x` itself when it is a ReferenceNeeds, else the needs of the objective options `x`."""
    if isinstance(x, ReferenceNeeds):
        return x
    return needs_of(x)


def all_terms() -> tuple[str, ...]:
    """Every term name of every registered objective, in registration order, then the calibration's
    forget_pull, the anchor and forget_active."""
    seen: dict[str, None] = {}
    for obj in _registered().values():
        seen.update(dict.fromkeys(obj.terms))
    seen[T.FORGET_PULL] = None
    seen[T.ANCHOR] = None
    seen[T.FORGET_ACTIVE] = None
    return tuple(seen)


def default_options(name: str) -> ObjectiveOptions:
    """The objective options of method `name` with its own defaults (METHOD_DEFAULTS) applied."""
    own = {
        key.split(".", 1)[1]: value
        for key, value in METHOD_DEFAULTS.get(name, {}).items()
        if key.startswith("objective.")
    }
    return dataclasses.replace(ObjectiveOptions(method=name), **own)


def describe() -> list[dict[str, Any]]:
    """One dict per method, in registration order: ``name``, ``summary``, ``source``, ``terms``,
    ``needs_reference`` (whether it uses the reference model under its own defaults) and ``defaults``
    (its METHOD_DEFAULTS: dotted option -> value; empty for a method on the project's defaults)."""
    out = []
    for name, obj in _registered().items():
        out.append(
            {
                "name": name,
                "summary": obj.summary,
                "source": obj.source,
                "terms": list(obj.terms),
                "needs_reference": obj.needs(default_options(name)).any,
                "defaults": copy.deepcopy(METHOD_DEFAULTS.get(name, {})),
            }
        )
    return out

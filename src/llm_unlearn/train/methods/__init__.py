"""Every unlearning method, one file each, registered in :mod:`llm_unlearn.train.registry` on import.

Import this package (not the registry) to look a method up: it imports every method file, then tells
the registry that registration is complete (the registry then orders the methods as
``config/presets.py`` ``METHOD_NAMES``: the order of the log columns), and re-exports the lookups.

Adding a method: one file here with a function decorated with
:func:`~llm_unlearn.train.registry.register` (name, terms, needs, summary, source), its import below,
its name in ``METHOD_NAMES`` and its defaults in ``METHOD_DEFAULTS`` (``config/presets.py``), its
formula in ``losses/`` if it is new, an independent test in ``tests/train/test_objectives.py``, and a
row in the README's table of methods. Shared pieces (the retain block, the divergence, the NPO term)
are in ``_shared.py``; DPO against an alternative answer in ``_dpo.py``.
"""

from __future__ import annotations

from llm_unlearn.train import registry
from llm_unlearn.train.methods import (  # noqa: F401  (each registers itself)
    altpo,
    ce_u,
    gradient_ascent,
    gradient_difference,
    idk_dpo,
    npo,
    npo_rt_div,
    pdu,
    rmu,
    satimp,
    simnpo,
    sugd,
    undial,
    wga,
)
from llm_unlearn.train.registry import (  # noqa: F401  (re-exported: the lookups)
    OBJECTIVES,
    Objective,
    all_terms,
    as_needs,
    describe,
    get,
    needs_of,
)

registry.registration_done()

"""Is it really forgotten? Attacks on an unlearned model, on any benchmark with forget and retain items.

One module per attack (``quantization``, ``relearning``, ``prompts``, ``logit_lens``), the probes every
attack works on (``probes``), the one scoring pass (``scoring``: the evaluation's batched passes), the
recovery formula (``recovery``), the stage (``stage.run_attacks``: ``llm-unlearn attack`` and ``evaluate
--attacks``), its options (``options``) and its summary / report / plot (``summary``).
"""

from llm_unlearn.attacks.options import ATTACKS, AttackOptions
from llm_unlearn.attacks.recovery import recovery

__all__ = ["ATTACKS", "AttackOptions", "recovery", "run_attacks"]


def run_attacks(*args, **kwargs):
    """:func:`llm_unlearn.attacks.stage.run_attacks` (imported on first use)."""
    from llm_unlearn.attacks.stage import run_attacks as run

    return run(*args, **kwargs)

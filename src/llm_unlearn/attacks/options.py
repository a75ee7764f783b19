"""The attack stage's options (``llm-unlearn attack`` and ``evaluate --attacks``), declared once with
``opt()``: flags, help and ranges come from here."""

from __future__ import annotations

from dataclasses import dataclass

from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError

__all__ = ["ATTACKS", "AttackOptions", "parse_attacks"]

ATTACKS = ("quantization", "relearning", "prompts", "logit_lens")
_POS = (1, None, False, False)


@dataclass
class AttackOptions:
    attacks: str = opt(",".join(ATTACKS), f"comma-separated, any of {', '.join(ATTACKS)}", flag="--attacks")
    target_model: str | None = opt(
        None,
        "the model before unlearning (default with --adapter: --model without the adapter)",
        flag="--target-model",
        path=True,
    )
    never_trained_model: str | None = opt(
        None,
        "a model that never saw the forget set (e.g. `finetune` on retain only): relearning and the logit "
        "lens run on it too",
        flag="--never-trained-model",
        path=True,
    )
    quant_schemes: str = opt(
        "nf4,int8", "quantization schemes, comma-separated: nf4, int8", flag="--quant-schemes"
    )
    relearn_steps: int = opt(20, "relearning optimizer steps", flag="--relearn-steps", range=_POS)
    relearn_fraction: float = opt(
        0.5,
        "share of the forget units relearned (the others are scored)",
        flag="--relearn-fraction",
        range=(0, 1, True, True),
    )
    relearn_lr: float = opt(
        1e-3, "relearning learning rate", flag="--relearn-lr", range=(0, None, True, False)
    )
    relearn_method: str = opt(
        "lora",
        "relearn with a fresh LoRA adapter, or all weights",
        flag="--relearn-method",
        choices=("lora", "full"),
    )
    attack_max_new_tokens: int = opt(
        32, "generation length of the attacks' scoring", flag="--attack-max-new-tokens", range=_POS
    )
    attack_batch_size: int = opt(
        16, "batch size of the attacks' passes", flag="--attack-batch-size", range=_POS
    )
    attack_limit: int | None = opt(
        None,
        "at most N forget and N retain items (whole benchmark by default)",
        flag="--attack-limit",
        range=_POS,
    )
    attack_seed: int = opt(
        0,
        "seed of the unit split, the in-context shots and relearning",
        flag="--attack-seed",
        range=(0, 2**32 - 1, False, False),
    )


def _names(text: str, known: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"{flag}: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def parse_attacks(o: AttackOptions) -> tuple[list[str], list[str]]:
    """(attacks, quantization schemes) from the comma-separated options; one UserError for an unknown name."""
    from llm_unlearn.attacks.quantization import SCHEMES

    return _names(o.attacks, ATTACKS, "--attacks"), _names(o.quant_schemes, SCHEMES, "--quant-schemes")

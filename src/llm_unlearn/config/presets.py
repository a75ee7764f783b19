"""The presets: partial configurations applied over the defaults. `default` is the corrected method;
the others reproduce the upstream systems exactly. Also the methods as configuration knows them: their
names (METHOD_NAMES, the choices of objective.method) and their own defaults (METHOD_DEFAULTS). The
methods themselves are registered in ``llm_unlearn.train.methods``, which checks that it registers
exactly these names in this order; configuration never imports training code."""

from __future__ import annotations

from typing import Any

# Presets are partial dicts applied over the defaults. They reproduce the upstream systems.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Clausen (2025) with the retain term replaced by a true Rényi divergence (our default).
    "default": {},
    # Clausen (2025) exactly: the seed's token-level "Rényi" term (not a divergence), uncalibrated.
    "clausen2025": {
        "objective": {"retain_divergence": "token_renyi_legacy"},
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
    # Atyaephyra (SemEval-2025 Task 4): token NPO + retain NLL + 0.5 x token-level F.kl_div,
    # LoRA r=5 alpha=5 on q/v, Adam without schedule, 20 epochs, no chunking.
    "atyaephyra": {
        "objective": {
            "retain_divergence": "token_renyi_legacy",
            "renyi_alpha": 1.0,  # the legacy alpha = 1 branch is their F.kl_div term
            "divergence_weight": 0.5,
            "npo_beta": 0.5,
            "npo_level": "token",
        },
        "lora": {"r": 5, "alpha": 5, "target_modules": ["q_proj", "v_proj"]},
        "schedule": {"sequential": False, "retain_per_forget": 1, "epochs": 20},
        "train": {
            "learning_rate": 1e-4,
            "batch_size": 4,
            "optimizer": "adam",
            "lr_scheduler": "constant",
            "seed": 42,
        },
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
    # AILS-NTUA (SemEval-2025 Task 4): SUGD = per-sample CE x factor (-1 forget, +0.5 retain), chunked.
    "ails-ntua": {
        "objective": {"method": "sugd", "sugd_forget_factor": -1.0, "sugd_retain_factor": 0.5},
        "lora": {"r": 16, "alpha": 64},
        "schedule": {"chunk_size": 32, "retain_per_forget": 7, "split_retain": True, "epochs": 7},
        "train": {"learning_rate": 1e-5, "batch_size": 1},
        "calibration": {"mode": "off", "eval_every": "off", "select": "last", "unlearn_documents": False},
    },
}


# Every method, in registration order (the order of train/methods/__init__.py, of `--method`'s choices and
# of the log columns): plain names, so that options and validate() know them without importing train/.
METHOD_NAMES: tuple[str, ...] = (
    "npo_rt_div",
    "npo",
    "gradient_ascent",
    "gradient_difference",
    "sugd",
    "simnpo",
    "idk_dpo",
    "altpo",
    "rmu",
    "undial",
    "ce_u",
    "wga",
    "satimp",
    "pdu",
)

# Each method's own defaults (applied to options a preset, YAML file or flag did not set). Sources:
# the method's paper or open-unlearning's trainer config (locuslab/open-unlearning, configs/trainer/*.yaml,
# commit d3d7cf9), as docs/methods.md details. The retain side of every method: a retain NLL weighted by
# retain_weight (open-unlearning's alpha), plus the divergence only when divergence_weight > 0.
_NO_DIVERGENCE = {"objective.divergence_weight": 0.0}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # open-unlearning NPO.yaml: beta 0.1, sequence level (NPO paper), gamma 1, alpha 1 with a retain NLL
    "npo": {
        "objective.npo_beta": 0.1,
        "objective.npo_level": "sequence",
        "objective.forget_weight": 1.0,
        "objective.retain_weight": 1.0,
        **_NO_DIVERGENCE,
    },
    "simnpo": {
        "objective.forget_weight": 0.125,
        "objective.retain_weight": 1.0,
        **_NO_DIVERGENCE,
    },  # SimNPO.yaml
    "idk_dpo": {"objective.forget_weight": 1.0, "objective.retain_weight": 1.0, **_NO_DIVERGENCE},  # DPO.yaml
    "altpo": {"objective.forget_weight": 1.0, "objective.retain_weight": 1.0, **_NO_DIVERGENCE},  # DPO.yaml
    # RMU.yaml weights; WMDP trains only the MLP output projection (down_proj) of the steered layer and the
    # two below it (train/methods/rmu.py rmu_train_layers)
    "rmu": {
        "objective.forget_weight": 1.0,
        "objective.retain_weight": 1.0,
        "lora.target_modules": ["down_proj"],
        **_NO_DIVERGENCE,
    },
    "undial": {"objective.retain_weight": 0.0, **_NO_DIVERGENCE},  # UNDIAL.yaml (alpha 0)
    "wga": {"objective.forget_weight": 1.0, "objective.retain_weight": 1.0, **_NO_DIVERGENCE},  # WGA.yaml
    # the authors' forget + 0.1 x retain (tmlr-group/SatImp forget_sat.yaml coeff 0.1, satimp_gd in
    # dataloader/dataloader_sat.py; open-unlearning's SatImp class and README agree; its yaml has the inverse)
    "satimp": {
        "objective.forget_weight": 1.0,
        "objective.retain_weight": 0.1,
        **_NO_DIVERGENCE,
    },
    "ce_u": {"objective.retain_weight": 0.0, **_NO_DIVERGENCE},  # CEU.yaml (forget only)
    "pdu": {"objective.forget_weight": 1.0, "objective.retain_weight": 1.0, **_NO_DIVERGENCE},  # PDU.yaml
}

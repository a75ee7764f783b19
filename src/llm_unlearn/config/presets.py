"""The presets: partial configurations applied over the defaults. `default` is the corrected method;
the others reproduce the upstream systems exactly."""

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

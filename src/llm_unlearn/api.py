"""The public Python API, re-exported lazily by ``llm_unlearn`` (``from llm_unlearn import unlearn``):

- :func:`unlearn`: run (or resume) an unlearning job, the library form of ``llm-unlearn train``;
- :func:`finetune`: build a target model that has memorized data (``llm-unlearn finetune``);
- :func:`build_config`: an :class:`~llm_unlearn.config.UnlearnConfig` from defaults, a preset, a YAML
  file and dotted overrides (what ``train`` does with its flags);
- ``evaluate``: ``llm_unlearn.evaluation.run.evaluate``, the one evaluation runner.

Each is a thin function over the module that does the work; nothing here imports torch until called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_config", "finetune", "unlearn"]


def build_config(
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
):
    """An ``UnlearnConfig``: defaults -> the method's defaults -> ``preset`` -> the YAML file ->
    ``overrides`` (dotted keys such as ``"train.learning_rate"``), validated (one ``ConfigError`` line on a
    bad value). Same as :func:`llm_unlearn.config.build_config`."""
    from llm_unlearn.config import build_config as _build

    return _build(yaml_path, overrides, preset)


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword form to dotted keys: ``train__learning_rate`` -> ``train.learning_rate`` (dotted keys,
    given with ``**{"train.learning_rate": ...}``, pass unchanged)."""
    return {k.replace("__", "."): v for k, v in overrides.items()}


def unlearn(config=None, /, *, model=None, tokenizer=None, **overrides) -> dict[str, Any]:
    """Run (or resume) an unlearning job; returns the run summary (``run.json``'s content, with
    ``summary["model"]`` the trained PEFT model).

    ``config``: an ``UnlearnConfig``, a YAML path, a dict of dotted overrides
    (``{"model.name_or_path": ..., "data.data": ..., "train.output_dir": ...}``) or None (the defaults).
    ``overrides``: more dotted options on top, as ``**{"objective.renyi_alpha": 0.7}`` or in keyword
    form with ``__`` for the dot (``train__output_dir="runs/x"``). ``model`` / ``tokenizer``: an
    already-loaded model and tokenizer to unlearn from (``model.name_or_path`` still names it in the
    outputs). Same as :func:`llm_unlearn.train.loop.run_unlearning`.
    """
    from llm_unlearn.config import UnlearnConfig, apply_overrides, validate
    from llm_unlearn.train.loop import run_unlearning

    extra = _dotted(overrides)
    if isinstance(config, UnlearnConfig):
        cfg = config
        if extra:
            import copy

            cfg = copy.deepcopy(config)
            apply_overrides(cfg, extra, "unlearn()")
            validate(cfg)
    elif isinstance(config, dict):
        cfg = build_config(overrides={**_dotted(config), **extra})
    elif config is None or isinstance(config, (str, Path)):
        cfg = build_config(config, overrides=extra)
    else:
        raise TypeError(
            f"config must be an UnlearnConfig, a YAML path or a dict, got {type(config).__name__}"
        )
    return run_unlearning(cfg, model=model, tokenizer=tokenizer)


def finetune(opts=None, /, **options) -> dict[str, Any]:
    """Fine-tune a model (or a fresh tiny OLMo-2: ``model="tiny"``) until it has memorized the data; writes
    ``output_dir`` (a model directory that ``unlearn`` and ``evaluate`` accept, plus ``finetune.json``) and
    returns the ``finetune.json`` content.

    ``opts``: a :class:`llm_unlearn.finetune.FinetuneOptions`; ``options``: its fields as keywords (they
    win), e.g. ``finetune(model="tiny", data="data/", until_em=0.9, output_dir="runs/target")``. The
    keywords mirror ``llm-unlearn finetune``'s flags (``--until-em`` -> ``until_em``). Same as
    :func:`llm_unlearn.finetune.finetune`."""
    from llm_unlearn.finetune.core import finetune as _finetune

    return _finetune(opts, **options)

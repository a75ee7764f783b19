"""The training stage: records -> chunk plan -> trainer -> outputs.

    prepare.py      data, resume check, model + LoRA, tokens, chunk plan
    loop.py         run_unlearning: build the trainer, train chunk after chunk, write the outputs
    trainer.py      the transformers.Trainer subclass (gate, logging, data-parallel term weights)
    loss.py         the loss of one batch: positions -> logits -> gate -> the method's terms -> total
    registry.py     the method registry: register, get, needs_of, all_terms, describe
    methods/        one file per method (registers itself); import it to look methods up
    step.py         per-batch structures: answer positions, reference needs / outputs, Step, TermValue
    head.py         the answer-only output layer
    reference.py    the reference's outputs behind one interface: live pass, cached, fixed
    cache_mode.py   which reference-cache mode a run uses, and why (pure policy)
    reference_source.py  a run's reference source: builds / reuses the cache or goes live
    cache.py        storage of the cached reference; cache_build.py: fingerprints and the build
    checkpoint.py   save, recover, resume
    calibration.py  the pure rules of calibrated unlearning; calibrated.py: their driver in a run;
                    monitor.py: the budgeted evaluation during training
    process.py      ranks, signals, versions;  progress.py: progress bar, log rows, chunk summaries
    terms.py        the names of the loss terms and their units

``run_unlearning`` is imported lazily: ``from llm_unlearn.train import run_unlearning``.
"""

from __future__ import annotations


def run_unlearning(cfg, *, model=None, tokenizer=None) -> dict:
    """See :func:`llm_unlearn.train.loop.run_unlearning`."""
    from llm_unlearn.train.loop import run_unlearning as run

    return run(cfg, model=model, tokenizer=tokenizer)

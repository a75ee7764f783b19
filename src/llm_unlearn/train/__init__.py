"""The training stage: records -> chunk plan -> trainer -> outputs.

    prepare.py      data, resume check, model + LoRA, tokens, chunk plan
    loop.py         run_unlearning: build the trainer, train chunk after chunk, write the outputs
    trainer.py      the transformers.Trainer subclass (gate, logging, data-parallel term weights)
    loss.py         the loss of one batch: positions -> logits -> gate -> objective terms -> total
    objectives.py   the registry: one small function per method -> named terms
    step.py         per-batch structures: answer positions, reference needs / outputs, Step, TermValue
    head.py         the answer-only output layer
    reference.py    the reference's outputs, live or cached, behind one interface; which one a run uses
    cache.py        storage of the cached reference; cache_build.py: fingerprints and the build
    checkpoint.py   save, recover, resume
    calibration.py  the pure rules of calibrated unlearning; calibrated.py: their driver in a run
    process.py      ranks, signals, versions;  progress.py: progress bar, log rows, chunk summaries
    terms.py        the names of the loss terms and their units

``run_unlearning`` is imported lazily: ``from llm_unlearn.train import run_unlearning``.
"""

from __future__ import annotations


def run_unlearning(cfg, *, model=None, tokenizer=None) -> dict:
    """See :func:`llm_unlearn.train.loop.run_unlearning`."""
    from llm_unlearn.train.loop import run_unlearning as run

    return run(cfg, model=model, tokenizer=tokenizer)

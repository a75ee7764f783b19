"""The names of the loss terms and of what each is averaged over, defined once.

Logs (``log_history.jsonl``), the progress bar, the chunk summaries in ``run.json`` and the plots all
use these names. A method (``train/methods/``) declares which terms it produces; the full list in
log order is :func:`llm_unlearn.train.registry.all_terms`.
"""

from __future__ import annotations

# terms of the built-in objectives
NPO = "npo"  # negative preference optimization on forget answers
RETAIN_NLL = "retain_nll"  # cross-entropy on retain answers
DIVERGENCE = "divergence"  # Rényi / KL (or the upstream token form) between model and reference, retain
FORGET_NLL = "forget_nll"  # cross-entropy on forget answers (ascended by GA / GD; logged by SUGD)
SUGD = "sugd"  # AILS-NTUA's signed per-sample cross-entropy
FORGET_PULL = "forget_pull"  # calibration.pull: NLL of the forget documents drawn back toward the holdout
ANCHOR = "anchor"  # calibration.anchor_documents: how far unseen documents' loss rose above the reference's
FORGET_ACTIVE = "forget_active"  # share of the batch's forget rows that the calibration gate still pushes

# what a term is a mean over: under data parallelism each term is re-weighted to the global batch by
# the count of its unit (train/trainer.py, global_term_scale)
FORGET_TOKENS = "forget_tokens"  # answer tokens of the pushed forget rows
RETAIN_TOKENS = "retain_tokens"  # answer tokens of the retain rows
FORGET_ROWS = "forget_rows"  # pushed forget rows (sequence-level terms)
ROWS = "rows"  # every row of the batch
RETAIN_ROWS = "retain_rows"  # retain rows (sequence-level retain terms)
UNITS = (FORGET_TOKENS, RETAIN_TOKENS, FORGET_ROWS, ROWS, RETAIN_ROWS)

# the columns of a log row besides the terms
LOG_EXTRA = ("loss", "learning_rate", "grad_norm")

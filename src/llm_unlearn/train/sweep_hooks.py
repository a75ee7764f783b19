"""What `llm-unlearn sweep` changes in a run (``sweep/objective.py`` sets these around one trial and puts
them back afterwards; a plain run never touches them):

- ``reference_dir``: the directory that holds the reference cache (``DIR/reference_cache``) instead of the
  run's own output directory, so that every trial with the same fingerprint reuses one cache;
- ``on_evaluation``: called with each calibration evaluation's row (``train/monitor.py``) right after it
  is made; the sweep reports the proxy to the trial there, and its pruner may end the trial by raising;
- ``start_measurement``: an object with ``get()`` / ``put(measured)`` holding the calibration's first
  measurement (``TrainingMonitor.measure``) of the untrained start, shared by every trial whose start and
  evaluation are the same (``sweep/shared.py`` keys it); used only at step 0, before any training, and
  only while every LoRA B matrix is zero (the start computes exactly the target);
- ``tokens``: a dict memo of tokenized records (``train/prepare.py``), shared by the trials of a process;
- ``ephemeral``: the run's directory is removed when it returns (a trial is scored from the returned
  summary, and a killed trial is retried from its start, never resumed): no checkpoint after each chunk,
  and none of the final files (adapter, merged model, plots, log, run.json) nor the "did nothing" check
  (``train/effect.py``: the trial's value judges the run). The training and every evaluation are the same.
"""

from __future__ import annotations

SWEEP_HOOKS: dict = {
    "reference_dir": None,
    "on_evaluation": lambda ev: None,
    "start_measurement": None,
    "tokens": None,
    "ephemeral": False,
}

"""What `llm-unlearn sweep` changes in a run (``sweep/objective.py`` sets these around one trial and puts
them back afterwards; a plain run never touches them):

- ``reference_dir``: the directory that holds the reference cache (``DIR/reference_cache``) instead of the
  run's own output directory, so that every trial with the same fingerprint reuses one cache;
- ``on_evaluation``: called with each calibration evaluation's row (``train/monitor.py``) right after it
  is made; the sweep reports the proxy to the trial there, and its pruner may end the trial by raising.
"""

from __future__ import annotations

SWEEP_HOOKS: dict = {"reference_dir": None, "on_evaluation": lambda ev: None}

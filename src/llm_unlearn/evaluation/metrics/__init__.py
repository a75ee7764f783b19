"""Pure formulas, no model and no torch at import.

- :mod:`.semeval`: SemEval-2025 Task 4 (ROUGE-L / ROUGE-1 recall, exact match, per split/task means,
  the 12 terms, harmonic mean, MIA score, final aggregate);
- :mod:`.mia`: membership-inference AUCs (loss, zlib, Min-K%, Min-K%++ from per-document rows);
- :mod:`.tofu_muse`: TOFU and MUSE metrics (truth ratio, forget quality, model utility, exact
  memorization, extraction strength, privleak, ROUGE-L).
"""

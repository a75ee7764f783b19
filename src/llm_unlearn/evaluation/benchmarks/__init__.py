"""The registered benchmarks; every module / package here registers one on import
(:func:`llm_unlearn.evaluation.benchmark.register_benchmark`), found by the registry on first use.

- :mod:`.semeval`: SemEval-2025 Task 4 (``evaluate``'s default);
- :mod:`.tofu`: TOFU; :mod:`.muse`: MUSE;
- :mod:`.mmlu`: Open-Instruct-compatible MMLU (the ``mmlu`` subcommand).
"""

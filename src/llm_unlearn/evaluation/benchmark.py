"""The `Benchmark` protocol and the registry of benchmarks (SemEval, TOFU, MUSE, MMLU, and any you add).

A benchmark is a small object with

- ``name``: what ``evaluate --benchmark NAME`` and ``evaluate(..., benchmark=NAME)`` take;
- ``summary``: one line for ``--help``;
- ``options``: a dataclass of its options declared with :func:`llm_unlearn.config.options.opt` (flag,
  default, help, choices, range): the command line, the range checks and ``evaluate(**options)`` come
  from it. A flag shared by several benchmarks (``--data``, ``--batch-size``) is the same field name in
  each of their classes (the default may differ);
- ``required``: the option fields that must be given (e.g. ``("data",)``);
- ``exclusive``: groups of option fields of which at most one may be given;
- ``outputs``: the names it writes inside the output directory (they go into the directory's manifest;
  one that exists there but is not in the manifest is a user's file, and the run is refused);
- ``inputs(opts)``: every input path (data, MIA data, a retain reference, ...): an output directory is
  never one of them, nor inside one;
- ``check(opts)``: reads and validates every input BEFORE any model loads; returns the loaded data;
- ``run(model, tokenizer, data, opts, out_dir, progress, *, source)``: evaluates and writes its files
  (its ``<name>_summary.json`` or ``metrics.json``, report.md, plots) into `out_dir`; returns the
  summary in the one shape of :func:`llm_unlearn.evaluation.report.make_summary`. `source` is the
  :class:`~llm_unlearn.evaluation.run.ModelSource` the model came from (for the run's config);
- ``text(summary, out_dir)``: the lines the command line prints afterwards.

Adding a benchmark = one module in ``evaluation/benchmarks/`` that calls :func:`register_benchmark`
(found there on first use of the registry; a name starting with ``_`` is skipped) + a reader in ``data/`` + tests. The runner
(:mod:`llm_unlearn.evaluation.run`) and the ``evaluate`` subcommand pick it up; no CLI edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llm_unlearn.errors import UserError

__all__ = [
    "Benchmark",
    "register_benchmark",
    "unregister_benchmark",
    "get_benchmark",
    "benchmark_names",
    "all_benchmarks",
]


@runtime_checkable
class Benchmark(Protocol):
    name: str
    summary: str
    options: type
    required: tuple[str, ...]
    exclusive: tuple[tuple[str, ...], ...]
    outputs: tuple[str, ...]

    def inputs(self, opts) -> Sequence[str | None]: ...

    def check(self, opts) -> Any: ...

    def run(self, model, tokenizer, data, opts, out_dir: Path, progress: bool, *, source=None) -> dict: ...

    def text(self, summary: dict, out_dir: Path) -> str: ...


_REGISTRY: dict[str, Benchmark] = {}
_DISCOVERED = False
#: option names a benchmark may not use: they belong to the model source or to the runner
RESERVED = (
    "model",
    "adapter",
    "tokenizer",
    "dtype",
    "device",
    "trust_remote_code",
    "allow_pickle",
    "gguf_file",
    "benchmark",
    "output_dir",
    "overwrite",
    "progress",
)


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Add `benchmark` to the registry (returns it). Its options must be a dataclass without a reserved
    field name; a name is registered once."""
    if not isinstance(benchmark, Benchmark):
        raise TypeError(f"{benchmark!r} does not have the Benchmark protocol's attributes")
    if not dataclasses.is_dataclass(benchmark.options):
        raise TypeError(f"benchmark {benchmark.name!r}: options must be a dataclass of opt() fields")
    clash = sorted({f.name for f in dataclasses.fields(benchmark.options)} & set(RESERVED))
    if clash:
        raise TypeError(f"benchmark {benchmark.name!r}: option names {clash} are reserved")
    if benchmark.name in _REGISTRY and _REGISTRY[benchmark.name] is not benchmark:
        raise ValueError(f"a benchmark named {benchmark.name!r} is registered already")
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def unregister_benchmark(name: str) -> None:
    """Remove a benchmark (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every module / package in evaluation/benchmarks/ once: each registers its benchmark."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import importlib
    import pkgutil

    from llm_unlearn.evaluation import benchmarks

    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{benchmarks.__name__}.{info.name}")


#: the built-in benchmarks first, in this order; any other in registration order
_ORDER = ("semeval", "tofu", "muse", "mmlu")


def benchmark_names() -> tuple[str, ...]:
    """The registered names: semeval, tofu, muse, mmlu, then any other."""
    _discover()
    known = [n for n in _ORDER if n in _REGISTRY]
    return tuple(known + [n for n in _REGISTRY if n not in _ORDER])


def all_benchmarks() -> list[Benchmark]:
    return [_REGISTRY[n] for n in benchmark_names()]


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as `name`; an unknown name is one UserError naming the known ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown benchmark {name!r}; known benchmarks: {', '.join(benchmark_names())}"
        ) from None

"""The one runner every evaluation goes through (``evaluate --benchmark NAME``, ``mmlu``, ``evaluate()``).

    run_evaluation(name, source, opts, output_dir):
        benchmark = get_benchmark(name)              the registry (evaluation/benchmark.py)
        every option checked against its declaration, required ones given, exclusive ones alone
        data = benchmark.check(opts)                 every input read and validated: no model loaded yet
        output directory: outputs.prepare_output_dir (the model's and the benchmark's inputs, its
            own names), then DirectoryLock, then remove_stale_tmp    -- the only call site for all
        model, tokenizer = source.load()
        summary = benchmark.run(...)                 its files, report.md, plots; the summary shape
        -> summary

There is no path around it: a benchmark registered in evaluation/benchmarks/ gets the input checks,
the output policy and the lock without any other edit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.config.declare import check_options, flag_name
from llm_unlearn.config.options import opt
from llm_unlearn.errors import UserError
from llm_unlearn.evaluation.benchmark import Benchmark, get_benchmark

__all__ = ["ModelSource", "run_evaluation", "evaluate", "check_required", "given_options"]


@dataclass
class ModelSource:
    """Where the evaluated model comes from; ``load()`` gives (model, tokenizer)."""

    model: str | None = opt(
        None, "model directory or hub id (hub ids need network)", flag="--model", path=True
    )
    adapter: str | None = opt(
        None, "PEFT adapter directory, attached without merging", flag="--adapter", path=True
    )
    tokenizer: str | None = opt(
        None, "tokenizer directory or hub id (default: the model's)", flag="--tokenizer", path=True
    )
    dtype: str = opt(
        "auto", "auto (bf16 on capable GPUs, else fp32) | float32 | bfloat16 | float16", flag="--dtype"
    )
    device: str | None = opt(
        None, "torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)", flag="--device"
    )
    trust_remote_code: bool = opt(
        False, "allow the model repository's own code", switch=("--trust-remote-code", True)
    )
    allow_pickle: bool = opt(
        False, "load pickle weights (.bin) if no safetensors", switch=("--allow-pickle", True)
    )
    gguf_file: str | None = opt(None, "GGUF file inside --model", flag="--gguf-file")
    force: bool = opt(
        False,
        "use an adapter that records another base model (adapter/llm_unlearn_base.json) anyway",
        switch=("--force", True),
    )

    def inputs(self) -> list[str | None]:
        return [self.model, self.adapter, self.tokenizer]

    def load(self):
        """(model, tokenizer): the model with the adapter attached (not merged)."""
        from llm_unlearn.modeling import load_model_and_tokenizer

        if not self.model:
            raise UserError("no model given (use --model PATH)")
        return load_model_and_tokenizer(
            self.model,
            adapter=self.adapter,
            tokenizer=self.tokenizer,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
            gguf_file=self.gguf_file,
            force=self.force,
        )


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def given_options(benchmark: Benchmark, opts) -> set[str]:
    """The option fields of `opts` that differ from their declared defaults (i.e. were given)."""
    out = set()
    for f in dataclasses.fields(benchmark.options):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(opts, f.name) != default:
            out.add(f.name)
    return out


def check_required(benchmark: Benchmark, opts) -> None:
    """Every required option given, at most one of each exclusive group: one UserError line."""
    for name in benchmark.required:
        if getattr(opts, name) in (None, ""):
            flag = flag_name(_field(benchmark.options, name))
            raise UserError(f"--benchmark {benchmark.name} needs {flag}")
    given = given_options(benchmark, opts)
    for group in benchmark.exclusive:
        both = [flag_name(_field(benchmark.options, n)) for n in group if n in given]
        if len(both) > 1:
            raise UserError(f"{both[1]} is not allowed with {both[0]}")


def run_evaluation(
    benchmark_name: str,
    model: ModelSource,
    opts,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    kind: str = "evaluate",
) -> dict[str, Any]:
    """Evaluate `model` on the benchmark `benchmark_name` with its options `opts`, writing into
    `output_dir`; returns the summary (the shape of :func:`llm_unlearn.evaluation.report.make_summary`).
    `kind`: the output directory's marker ("evaluate"; the ``mmlu`` subcommand keeps "mmlu"), so that
    earlier outputs stay reusable."""
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    benchmark = get_benchmark(benchmark_name)
    if not isinstance(opts, benchmark.options):
        raise TypeError(f"options of {benchmark_name!r} must be a {benchmark.options.__name__}")
    check_options(model)
    check_options(opts)
    if not model.model:
        raise UserError("no model given (use --model PATH)")
    check_required(benchmark, opts)
    data = benchmark.check(opts)  # every input read before the model loads
    out = Path(output_dir)
    prepare_output_dir(
        out,
        kind,
        [*model.inputs(), *benchmark.inputs(opts)],
        overwrite=overwrite,
        own_names=benchmark.outputs,
    )
    with DirectoryLock(out):
        remove_stale_tmp(out)
        loaded, tokenizer = model.load()
        return benchmark.run(loaded, tokenizer, data, opts, out, progress, source=model)


def evaluate(
    model: str | os.PathLike | ModelSource,
    *,
    benchmark: str = "semeval",
    output_dir: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate a model on a registered benchmark; the library form of ``llm-unlearn evaluate``.

    `model`: a model directory or hub id (or a :class:`ModelSource`); `adapter`: a PEFT adapter attached
    to it; `options`: any field of :class:`ModelSource` (``tokenizer``, ``dtype``, ``device``, ...) or of
    the benchmark's options (``data``, ``batch_size``, ``mia_data``, ...; see ``llm-unlearn evaluate
    --help``). An unknown name is one UserError listing the known ones. Returns the summary::

        evaluate("runs/base", adapter="runs/unlearned/adapter", data="data/semeval",
                 output_dir="runs/eval", max_new_tokens=64)
    """
    bench = get_benchmark(benchmark)
    options = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
    source_names = [f.name for f in dataclasses.fields(ModelSource) if f.name not in ("model", "adapter")]
    option_names = [f.name for f in dataclasses.fields(bench.options)]
    unknown = sorted(set(options) - set(source_names) - set(option_names))
    if unknown:
        raise UserError(
            f"unknown option {', '.join(unknown)} for benchmark {benchmark}; known: "
            f"{', '.join(sorted(source_names + option_names))}"
        )
    if isinstance(model, ModelSource):
        source = dataclasses.replace(model, **{k: v for k, v in options.items() if k in source_names})
        if adapter is not None:
            source = dataclasses.replace(source, adapter=os.fspath(adapter))
    else:
        source = ModelSource(
            model=os.fspath(model),
            adapter=None if adapter is None else os.fspath(adapter),
            **{k: v for k, v in options.items() if k in source_names},
        )
    opts = bench.options(**{k: v for k, v in options.items() if k in option_names})
    return run_evaluation(benchmark, source, opts, output_dir, overwrite=overwrite, progress=progress)

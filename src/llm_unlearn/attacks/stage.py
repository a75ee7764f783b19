"""The attack stage: one command, the four attacks, on any benchmark with forget and retain items.

    run_attacks(benchmark, source, bench_opts, attack_opts, output_dir):
        options checked (their declarations) -> benchmark.check(bench_opts): the benchmark's own input
        checks and --limit, before any model loads -> probes (attacks/probes.py)
        -> output directory: outputs.prepare_output_dir + DirectoryLock (the runner's policy)
        -> models: unlearned = source.load() (the evaluation's ModelSource), target, never-trained
        -> target and unlearned scored once (attacks/scoring.py: the evaluation's batched passes, cached)
        -> each attack -> attack_summary.json, attack_items.jsonl, report.md, plots/attack_recovery.png
           (attacks/summary.py), attack_timing.json (seconds and items/s per attack: machine-dependent,
           kept out of the summary)

``evaluate --attacks LIST`` runs the same stage after the benchmark, into ``OUT/attacks/``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from llm_unlearn.attacks.options import AttackOptions, parse_attacks
from llm_unlearn.attacks.probes import ProbeSet, limit_probes, probes_from
from llm_unlearn.attacks.scoring import Scorer, ScoreSettings
from llm_unlearn.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["AttackContext", "OUTPUTS", "run_attacks", "check_attack_inputs", "run_stage"]

OUTPUTS = ("attack_summary.json", "attack_items.jsonl", "attack_timing.json", "report.md", "plots")


@dataclasses.dataclass
class AttackContext:
    """What every attack works on: the models, the probes and the one scorer."""

    tokenizer: Any
    target: Any
    unlearned: Any
    never: Any
    probes: ProbeSet
    scorer: Scorer
    seed: int = 0
    progress: bool = True
    notes: list[str] = dataclasses.field(default_factory=list)
    t0: float = dataclasses.field(default_factory=time.time)

    @property
    def batch_size(self) -> int:
        return self.scorer.settings.batch_size

    def say(self, message: str) -> None:
        """One progress line (stderr) with the elapsed time; a log line with --no-progress."""
        if self.progress:
            print(f"[attack {time.time() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)
        else:
            log.info("%s", message)

    def models(self) -> list[tuple[str, Any]]:
        out = [("target", self.target), ("unlearned", self.unlearned)]
        return out + ([("never_trained", self.never)] if self.never is not None else [])

    def score_all(self, key: str, model, desc: str, forget=None) -> dict[str, list[dict]]:
        """``{"forget": rows, "retain": rows}`` of ``model`` (``forget``: these probes instead of all)."""
        forget = self.probes.forget if forget is None else forget
        return {
            "forget": self.scorer.probes(key, model, self.tokenizer, forget, f"{desc} forget"),
            "retain": self.scorer.probes(key, model, self.tokenizer, self.probes.retain, f"{desc} retain"),
        }


def _other_source(source, path: str):
    return dataclasses.replace(source, model=path, adapter=None)


def check_attack_inputs(benchmark_name: str, source, bench_opts, attack_opts: AttackOptions):
    """Every option and input checked, nothing loaded: ``(benchmark, data, probes, attacks, schemes)``."""
    from llm_unlearn.config.declare import check_options
    from llm_unlearn.evaluation.benchmark import get_benchmark
    from llm_unlearn.evaluation.run import check_required

    bench = get_benchmark(benchmark_name)
    check_options(source)
    check_options(bench_opts)
    check_options(attack_opts)
    attacks, schemes = parse_attacks(attack_opts)
    if not source.model:
        raise UserError("no model given (use --model PATH)")
    if attack_opts.target_model is None and source.adapter is None:
        raise UserError(
            "attacks need the model before unlearning: --target-model PATH (or --model BASE --adapter A)"
        )
    for path, flag in (
        (attack_opts.target_model, "--target-model"),
        (attack_opts.never_trained_model, "--never-trained-model"),
    ):
        if path is not None and not Path(path).exists():
            raise UserError(f"{flag} not found: {path}")
    check_required(bench, bench_opts)
    data = bench.check(bench_opts)
    probes = probes_from(bench.name, data)
    probes.forget = limit_probes(probes.forget, attack_opts.attack_limit)
    probes.retain = limit_probes(probes.retain, attack_opts.attack_limit)
    if "relearning" in attacks and len(probes.units()) < 2:
        raise UserError(
            f"relearning needs at least 2 forget units (one to relearn, one to score); the data have "
            f"{len(probes.units())} (leave relearning out of --attacks)"
        )
    return bench, data, probes, attacks, schemes


def _load(source, attack_opts: AttackOptions):
    unlearned, tokenizer = source.load()
    target_src = _other_source(source, attack_opts.target_model or source.model)
    target, _ = target_src.load()
    never = None
    if attack_opts.never_trained_model:
        never, _ = _other_source(source, attack_opts.never_trained_model).load()
    return tokenizer, target, unlearned, never


def run_stage(ctx: AttackContext, attacks, schemes, o: AttackOptions) -> tuple[dict, dict]:
    """(raw results per attack, timing per attack); the baseline (target, unlearned, never-trained on
    the whole forget and retain sets) first."""
    from llm_unlearn.attacks import logit_lens, prompts, quantization, relearning

    timing: dict[str, dict] = {}
    results: dict[str, Any] = {}

    def timed(name, fn):
        t, n = time.time(), ctx.scorer.items_scored
        results[name] = fn()
        sec = time.time() - t
        items = ctx.scorer.items_scored - n
        timing[name] = {
            "seconds": sec,
            "items_scored": items,
            "items_per_second": items / sec if sec > 0 else None,
        }
        ctx.say(f"{name} done in {sec:.1f}s")

    # target and unlearned on everything (every attack compares with them); the never-trained model is
    # scored only where an attack needs it (relearning's held-out units)
    timed("baseline", lambda: {name: ctx.score_all(name, m, name) for name, m in ctx.models()[:2]})
    if "quantization" in attacks:
        timed("quantization", lambda: quantization.run_quantization(ctx, schemes))
    if "relearning" in attacks:
        s = relearning.RelearnSettings(
            steps=o.relearn_steps,
            fraction=o.relearn_fraction,
            lr=o.relearn_lr,
            method=o.relearn_method,
            batch_size=min(8, max(1, len(ctx.probes.forget))),
            seed=o.attack_seed,
        )
        timed("relearning", lambda: relearning.run_relearning(ctx, s))
    if "prompts" in attacks:
        timed("prompts", lambda: prompts.run_prompts(ctx))
    if "logit_lens" in attacks:
        timed("logit_lens", lambda: logit_lens.run_logit_lens(ctx))
    return results, timing


def run_attacks(
    benchmark_name: str,
    source,
    bench_opts,
    attack_opts: AttackOptions,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    kind: str = "attack",
    subdir: str | None = None,
) -> dict[str, Any]:
    """Run the attacks on ``source`` (the unlearned model) and write the stage's files into
    ``output_dir`` (or ``output_dir/subdir``: ``evaluate --attacks`` writes ``OUT/attacks/``); returns
    the summary (the shape of :func:`llm_unlearn.evaluation.report.make_summary`)."""
    from llm_unlearn.attacks.summary import build_summary, write_outputs
    from llm_unlearn.outputs import DirectoryLock, prepare_output_dir, remove_stale_tmp

    bench, _, probes, attacks, schemes = check_attack_inputs(benchmark_name, source, bench_opts, attack_opts)
    out = Path(output_dir)
    inputs = [
        *source.inputs(),
        attack_opts.target_model,
        attack_opts.never_trained_model,
        *bench.inputs(bench_opts),
    ]
    prepare_output_dir(out, kind, inputs, overwrite=overwrite, own_names=[subdir] if subdir else OUTPUTS)
    dest = out / subdir if subdir else out
    with DirectoryLock(out):
        remove_stale_tmp(out)
        if subdir:
            dest.mkdir(exist_ok=True)
            remove_stale_tmp(dest)
        tokenizer, target, unlearned, never = _load(source, attack_opts)
        settings = ScoreSettings(attack_opts.attack_max_new_tokens, attack_opts.attack_batch_size, progress)
        ctx = AttackContext(
            tokenizer, target, unlearned, never, probes, Scorer(settings), attack_opts.attack_seed, progress
        )
        ctx.notes.extend(probes.notes)
        results, timing = run_stage(ctx, attacks, schemes, attack_opts)
        config = {
            "model": source.model,
            "adapter": source.adapter,
            "target_model": attack_opts.target_model or source.model,
            "never_trained_model": attack_opts.never_trained_model,
            "benchmark": bench.name,
            **{
                k: v
                for k, v in dataclasses.asdict(attack_opts).items()
                if k not in ("target_model", "never_trained_model")
            },
            "bench_options": {k: v for k, v in dataclasses.asdict(bench_opts).items() if v is not None},
        }
        summary = build_summary(bench.name, probes, results, config, ctx.notes)
        write_outputs(dest, summary, results, timing, probes)
    return summary

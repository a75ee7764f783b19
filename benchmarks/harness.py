"""What every benchmark part shares: progress lines, the part registry, part files and their merge,
and the summary table (this run beside the committed numbers).

* :class:`Progress`: one line per event on stderr (flushed, also when stderr is not a terminal):
  what is being measured, step i of n, the time spent and an estimate of the time left; a heartbeat
  thread repeats the current line whenever nothing was printed for ``heartbeat_s`` (20 s), so a part
  never stays silent for 30 s, even inside one long call. The first time-left estimate is the part's
  a priori seconds; from the first finished step on, the measured speed.
* :func:`register_part` / :data:`PARTS`: the named parts of ``make bench`` (``bench.py`` registers
  steps, mmlu, eval, scaling; a later part registers itself the same way and gets its Makefile target
  ``bench-<name>`` from the pattern rule, its file and its place in the merge for free).
* :func:`part_path`, :func:`write_json`, :func:`merge_parts`: each part writes
  ``results/<shape>-<device>[.quick].<part>.json``; the merge writes ``<shape>-<device>[.quick].json``.
* :func:`summary_rows`, :func:`format_summary`: the README's performance rows, this run's median
  [min - max over repeats] beside the committed file's, with the target and a verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent
PART_SCHEMA = "llm-unlearn-bench-part/1"


# ----------------------------------------------------------------------------- progress
def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of one part: ``units`` steps of (a priori) ``weight`` seconds in all.

    ``begin(what, weight)`` ends the current step and starts the next; the time left is the remaining
    weight times the speed observed so far (elapsed / weight done), minus the time already spent in the
    current step; before any step is done it is the a priori weight itself. A line is printed at every
    ``begin`` that comes ``min_interval_s`` after the previous line (always for ``force=True``), and by
    the heartbeat when nothing was printed for ``heartbeat_s``. ``clock`` and ``tick()`` let a test
    drive it without threads."""

    def __init__(
        self,
        part: str,
        units: int,
        estimate_s: float | None = None,
        *,
        total_weight: float | None = None,
        stream: TextIO | None = None,
        heartbeat_s: float | None = 20.0,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.part, self.units = part, max(1, int(units))
        self.weight = float(total_weight if total_weight is not None else self.units)
        self.estimate_s = estimate_s
        # seconds per unit of weight before any step is done: the a priori estimate, else unknown
        self.prior_speed = estimate_s / self.weight if estimate_s else None
        self.stream = stream
        self.heartbeat_s, self.min_interval_s, self.clock = heartbeat_s, min_interval_s, clock
        self.t0 = clock()
        self.index = 0  # steps begun
        self.done_weight = 0.0
        self.done_elapsed = 0.0  # time spent in the steps done
        self.current: tuple[str, float, float] | None = None  # what, weight, started
        self.last_line_at = -1e18
        self.lines = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the stream is looked up when printing, so that pytest's capture (which swaps sys.stderr) works
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def eta(self) -> float | None:
        now = self.clock()
        remaining = max(0.0, self.weight - self.done_weight)
        speed = self.done_elapsed / self.done_weight if self.done_weight > 0 else self.prior_speed
        if speed is None:
            return None
        in_current, w_current = (now - self.current[2], self.current[1]) if self.current else (0.0, 0.0)
        # never less than the steps after this one (a step running long is not a step nearly done)
        return max(0.0, (remaining - w_current) * speed, remaining * speed - in_current)

    def line(self, note: str = "") -> str:
        now = self.clock()
        what = self.current[0] if self.current else "starting"
        i = min(max(self.index, 1), self.units)
        extra = f" ({note})" if note else ""
        return (
            f"[bench {self.part} {fmt_seconds(now - self.t0)}] {what}: step {i} of {self.units}{extra}"
            f" - about {fmt_seconds(self.eta())} left"
        )

    def emit(self, text: str) -> None:
        with self._lock:
            out = self._out()
            out.write(text + "\n")
            out.flush()
            self.last_line_at = self.clock()
            self.lines += 1

    def _finish_current(self) -> None:
        if self.current is not None:
            _, w, started = self.current
            self.done_weight += w
            self.done_elapsed += self.clock() - started
            self.current = None

    def begin(self, what: str, weight: float = 1.0, force: bool = False) -> None:
        with self._lock:
            self._finish_current()
            self.index += 1
            self.current = (what, float(weight), self.clock())
            if force or self.clock() - self.last_line_at >= self.min_interval_s:
                self.emit(self.line())

    def tick(self) -> bool:
        """The heartbeat: print the current line when nothing was printed for ``heartbeat_s``."""
        with self._lock:
            if self.heartbeat_s is None or self.clock() - self.last_line_at < self.heartbeat_s:
                return False
            spent = self.clock() - self.current[2] if self.current else 0.0
            self.emit(self.line(f"{fmt_seconds(spent)} in this step"))
            return True

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat_s / 4)):
            self.tick()

    def start(self, title: str = "") -> Progress:
        est = f", about {fmt_seconds(self.estimate_s)} (a priori, 2 cores)" if self.estimate_s else ""
        self.emit(f"[bench {self.part}] {title or 'starting'}: {self.units} steps{est}")
        if self.heartbeat_s is not None and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name=f"progress-{self.part}", daemon=True)
            self._thread.start()
        return self

    def close(self, summary: str = "") -> float:
        with self._lock:
            self._finish_current()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        seconds = self.clock() - self.t0
        self.emit(f"[bench {self.part}] done in {fmt_seconds(seconds)}" + (f": {summary}" if summary else ""))
        return seconds

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self._thread is not None or not self._stop.is_set():
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)


class NoProgress(Progress):
    """Progress that prints nothing (tests, library calls)."""

    def __init__(self):
        super().__init__("-", 1, heartbeat_s=None)

    def emit(self, text: str) -> None:
        self.lines += 1

    def start(self, title: str = "") -> Progress:
        return self


def open_progress(factory, units: int, total_weight: float | None = None) -> Progress:
    """A part's progress from the factory it was handed (``factory(units, total_weight)``), or one
    that prints nothing when there is none."""
    return factory(units, total_weight) if factory is not None else NoProgress()


# ----------------------------------------------------------------------------- warnings
@contextlib.contextmanager
def quiet_deprecations():
    """Silence the deprecation warnings the harness itself triggers through the libraries it calls
    (peft reads ``model.is_gradient_checkpointing`` when it wraps a model, a FutureWarning since
    transformers renamed it ``is_activation_checkpointing``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
        yield


@contextlib.contextmanager
def quiet_small_splits():
    """The harness's warm-up calls score 2 items: the evaluator's "fewer than 5 items" warning is about
    the warm-up's own size, not a finding."""
    import logging

    log = logging.getLogger("llm_unlearn.evaluation.benchmarks.semeval.evaluate")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def checkpointing_on(model, kwargs: dict[str, Any]) -> None:
    """Activation checkpointing on, by the current name (transformers >= 5), else the old one."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_off(model) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


# ----------------------------------------------------------------------------- the part registry
@dataclass(frozen=True)
class Part:
    """A named part of ``make bench``. ``run(args, ctx) -> dict`` returns the part's section (keys
    of the merged result); ``full_s`` / ``quick_s``: its a priori seconds on 2 idle cores (the first
    time-left estimate), ``quick_s`` None when the quick run leaves the part out."""

    name: str
    title: str
    run: Callable[[Any, dict[str, Any]], dict[str, Any]]
    full_s: float
    quick_s: float | None = None


PARTS: dict[str, Part] = {}


def register_part(
    name: str,
    title: str,
    run: Callable[[Any, dict[str, Any]], dict[str, Any]],
    *,
    full_s: float,
    quick_s: float | None = None,
) -> Part:
    if not name.isidentifier() or name in ("quick", "merge"):
        raise ValueError(f"bad part name {name!r}")
    part = Part(name, title, run, full_s, quick_s)
    PARTS[name] = part
    return part


def part_names(quick: bool = False) -> list[str]:
    return [n for n, p in PARTS.items() if not quick or p.quick_s is not None]


def result_stem(shape: str, device: str, quick: bool) -> str:
    return f"{shape}-{device}" + (".quick" if quick else "")


def part_path(results: Path, shape: str, device: str, part: str, quick: bool = False) -> Path:
    return results / f"{result_stem(shape, device, quick)}.{part}.json"


def merged_path(results: Path, shape: str, device: str, quick: bool = False) -> Path:
    return results / f"{result_stem(shape, device, quick)}.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a killed run never leaves a file that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# keys every part file carries; the merge takes them from the first part and requires them to agree
HEADER_KEYS = ("shape", "device", "dtype", "threads", "quick")


def merge_parts(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One result from the part files (name -> content, in registry order): the header of the first,
    every part's section, and ``parts``: each part's seconds, load average and start time."""
    if not files:
        raise ValueError("no part files to merge")
    first = next(iter(files.values()))
    for name, f in files.items():
        for k in HEADER_KEYS:
            if f.get(k) != first.get(k):
                raise ValueError(f"part {name}: {k} = {f.get(k)!r}, but {first.get(k)!r} in the others")
    result: dict[str, Any] = {k: v for k, v in first["header"].items()}
    result["quick"] = bool(first.get("quick"))
    parts = {}
    for name, f in files.items():
        result.update(f["section"])
        parts[name] = {
            "seconds": f["seconds"],
            "loadavg_start": f["loadavg_start"],
            "loadavg_end": f["loadavg_end"],
            "started_at": f["started_at"],
        }
    result["parts"] = parts
    result["seconds"] = round(sum(p["seconds"] for p in parts.values()), 1)
    result["loadavg_start"] = parts[next(iter(parts))]["loadavg_start"]
    result["loadavg_end"] = parts[list(parts)[-1]]["loadavg_end"]
    result["started_at"] = parts[next(iter(parts))]["started_at"]
    return result


def committed(path: Path) -> dict[str, Any] | None:
    """The committed version of a results file (git HEAD), else the file on disk, else None."""
    try:
        rel = path.resolve().relative_to(ROOT.parent)
        proc = subprocess.run(
            ["git", "show", f"HEAD:{rel.as_posix()}"],
            cwd=ROOT.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    except (ValueError, OSError, subprocess.SubprocessError, json.JSONDecodeError):
        pass
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------- repeats and spread
def repeat_ratios(a_ms: list[float], b_ms: list[float], per: int) -> list[float]:
    """The ratio of medians in each block of ``per`` consecutive measured rounds (a repeat): the
    rounds measure every variant back to back, so a block's ratio is one measurement of the ratio."""
    per = max(1, int(per))
    n = min(len(a_ms), len(b_ms)) // per
    return [
        statistics.median(a_ms[i * per : (i + 1) * per]) / statistics.median(b_ms[i * per : (i + 1) * per])
        for i in range(n)
    ]


def spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
        "values": [round(v, 3) for v in values],
    }


def ratio_spread(result: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """min / median / max of a step ratio over the result's repeats (blocks of ``steps_per_repeat``
    rounds; a file without repeats: every measured round is one)."""
    v = result.get("variants") or {}
    if a not in v or b not in v:
        return None
    per = int(result.get("steps_per_repeat") or 1)
    return spread(repeat_ratios(v[a]["ms_steps"], v[b]["ms_steps"], per))


# ----------------------------------------------------------------------------- the summary table
# the README performance section's rows: (label, how to read the value, target)
STEP_ROWS = (
    ("ours / trunk_floor", ("ours", "trunk_floor"), ("<=", 1.05)),
    ("seed_style / ours", ("seed_style", "ours"), (">=", 2.0)),
    ("ours / sft_floor", ("ours", "sft_floor"), None),
    ("ours_no_cache / sft_floor", ("ours_no_cache", "sft_floor"), None),
    ("ref_forward / sft_floor", ("ref_forward", "sft_floor"), None),
    ("ours_gc / ours", ("ours_gc", "ours"), None),
)


def _paired_speedups(slow: dict[str, Any], fast: dict[str, Any]) -> dict | None:
    """slow / fast seconds of each repeat (the two paths alternate: repeat i of each is one pair)."""
    runs = list(zip(slow.get("seconds_runs") or [], fast.get("seconds_runs") or []))
    return spread([s / f for s, f in runs if f > 0])


def _mmlu_value(r: dict[str, Any]) -> tuple[float | None, dict | None]:
    mm = r.get("mmlu") or {}
    pc = mm.get("prefix_cache") or {}
    return pc.get("speedup"), _paired_speedups(mm.get("whole_prompt") or {}, pc)


def _eval_value(r: dict[str, Any]) -> tuple[float | None, dict | None]:
    ev = r.get("eval") or {}
    return ev.get("speedup"), _paired_speedups(ev.get("official_compat") or {}, ev.get("batched") or {})


def summary_rows(result: dict[str, Any], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for label, (a, b), target in STEP_ROWS:
        va = (result.get("variants") or {}).get(a)
        vb = (result.get("variants") or {}).get(b)
        if va is None or vb is None:
            continue
        sp = ratio_spread(result, a, b)
        # this run: the median over its repeats (the ratio of all rounds' medians without repeats)
        value = sp["median"] if sp and sp["n"] > 1 else round(va["ms_per_step"] / vb["ms_per_step"], 3)
        ref_value = ref_spread = None
        if reference and {a, b} <= set(reference.get("variants") or {}):
            rv = reference["variants"]
            ref_value = round(rv[a]["ms_per_step"] / rv[b]["ms_per_step"], 3)
            ref_spread = ratio_spread(reference, a, b)
        rows.append(_row(label, value, sp, ref_value, ref_spread, target))
    for label, get, target in (
        ("MMLU prefix cache speedup", _mmlu_value, (">=", 3.0)),
        (f"evaluation speedup ({(result.get('eval') or {}).get('size', '-')})", _eval_value, (">=", 8.0)),
    ):
        value, sp = get(result)
        if value is None:
            continue
        if sp and sp["n"] > 1:  # decided from the median over the repeats, as the step ratios
            value = sp["median"]
        ref_value, ref_sp = get(reference) if reference else (None, None)  # the README's value
        if reference and (reference.get("eval") or {}).get("size") != (result.get("eval") or {}).get("size"):
            if label.startswith("evaluation"):  # another check (demo vs realistic): not comparable
                ref_value, ref_sp = None, None
        if label.startswith("evaluation") and (result.get("eval") or {}).get("size") != "realistic":
            target = None  # the x8 target is the realistic check's; the demo-size check is another
        rows.append(_row(label, value, sp, ref_value, ref_sp, target))
    sc = result.get("scaling")
    if sc:
        ref_rows = {
            (r["axis"], r[r["axis"]]): r for r in ((reference or {}).get("scaling") or {}).get("rows", [])
        }
        for r in sc["rows"]:
            key = (r["axis"], r[r["axis"]])
            ref = ref_rows.get(key)
            rows.append(
                _row(
                    f"scaling seed/ours, {key[0]} {key[1]}",
                    r["seed_style/ours"],
                    None,
                    ref["seed_style/ours"] if ref else None,
                    None,
                    None,
                )
            )
    return rows


def _row(label, value, sp, ref_value, ref_sp, target) -> dict[str, Any]:
    row = {
        "row": label,
        "value": value,
        "spread": sp,
        "committed": ref_value,
        "committed_spread": ref_sp,
        "target": None if target is None else f"{target[0]} {target[1]}",
        "verdict": verdict(value, sp, target),
        "agrees_with_committed": agrees(value, sp, ref_value, ref_sp),
    }
    return row


def verdict(value: float | None, sp: dict | None, target: tuple[str, float] | None) -> str | None:
    """``met`` (the median meets the target), ``within spread`` (the median misses, but some repeat
    meets it: the run cannot tell), ``missed`` (every repeat misses)."""
    if target is None or value is None:
        return None
    op, bound = target
    ok = (lambda x: x <= bound) if op == "<=" else (lambda x: x >= bound)
    if ok(value):
        return "met"
    if sp and (ok(sp["min"]) or ok(sp["max"])):
        return "within spread"
    return "missed"


def agrees(value, sp, ref_value, ref_sp) -> bool | None:
    """Whether this run and the committed one overlap: [min, max] over repeats (a single value where
    there are none) of each."""
    if value is None or ref_value is None:
        return None
    lo, hi = (sp["min"], sp["max"]) if sp else (value, value)
    rlo, rhi = (ref_sp["min"], ref_sp["max"]) if ref_sp else (ref_value, ref_value)
    return lo <= rhi and rlo <= hi


def _cell(value, sp) -> str:
    if value is None:
        return "-"
    if sp and sp["n"] > 1:
        return f"{value:.3f} [{sp['min']:.3f}-{sp['max']:.3f}]"
    return f"{value:.3f}"


def format_summary(result: dict[str, Any], reference: dict[str, Any] | None, ref_name: str = "") -> str:
    rows = summary_rows(result, reference)
    head = (
        f"summary: this run ({'quick, ' if result.get('quick') else ''}{fmt_seconds(result.get('seconds'))}, "
        f"load {result.get('loadavg_start')} -> {result.get('loadavg_end')}) beside {ref_name or 'the committed run'}"
        + (
            f" ({fmt_seconds(reference.get('seconds'))}, load {reference.get('loadavg_start')} -> "
            f"{reference.get('loadavg_end')})"
            if reference
            else " (none found)"
        )
        + "; this run: median [min-max] over its repeats; committed: the README's value [min-max]"
        " over its repeats, or per step where it has none"
    )
    w = max([len(r["row"]) for r in rows] + [10])
    lines = [
        head,
        f"{'row':<{w}}  {'this run':<24}{'committed':<24}{'target':<9}{'verdict':<15}agrees",
    ]
    for r in rows:
        lines.append(
            f"{r['row']:<{w}}  {_cell(r['value'], r['spread']):<24}"
            f"{_cell(r['committed'], r['committed_spread']):<24}{r['target'] or '':<9}"
            f"{r['verdict'] or '':<15}{'' if r['agrees_with_committed'] is None else ('yes' if r['agrees_with_committed'] else 'no')}"
        )
    return "\n".join(lines)

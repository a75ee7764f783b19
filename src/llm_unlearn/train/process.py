"""The run's process: rank and world size, agreeing on a stop across processes, signal handling, the
versions a run records."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import signal

import torch

from llm_unlearn import __version__
from llm_unlearn.errors import TrainingInterrupted

log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def any_process(flag: dict) -> bool:
    """flag["stop"] or'ed over all processes (a signal may reach them during different steps). A
    collective when distributed: every process calls it at the same points."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        on_gpu = "nccl" in str(dist.get_backend()) and torch.cuda.is_available()
        device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
        t = torch.tensor([float(flag["stop"])], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        agreed = bool(t.item() > 0)
        # a signal handled while the collective ran set flag["stop"] after t was read: keep it pending
        # for the next call (never clear it), but decide by what every process agreed on
        flag["stop"] = flag["stop"] or agreed
        return agreed
    return flag["stop"]


def install_signal_handlers(flag: dict) -> dict:
    """SIGTERM / SIGINT: outside training (flag["raise"]) stop at once; during training finish the
    current step, save, and stop; a second signal stops now. Returns the previous handlers."""

    def handler(signum, frame):
        if flag.get("raise"):  # outside training (loading, final outputs): stop at once
            flag["stop"] = True
            raise TrainingInterrupted(
                f"interrupted by signal {signum} before the run was complete; nothing is "
                "half-written. Run the same command again to resume."
            )
        if flag["stop"]:  # second signal: stop now
            raise KeyboardInterrupt
        flag["stop"] = True
        log.warning("signal %d: finishing the current step, then saving and exiting", signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return old


@contextlib.contextmanager
def signals_stop_at_once(flag: dict, message: str):
    """Inside: a signal (or one already received) ends the run now with TrainingInterrupted(message);
    after: the flag's previous rule (in training: finish the step)."""
    if flag["stop"]:
        raise TrainingInterrupted(message)
    before = flag["raise"]
    flag["raise"] = True
    try:
        yield
    except TrainingInterrupted:
        raise TrainingInterrupted(message) from None
    finally:
        flag["raise"] = before


def restore_signal_handlers(old: dict) -> None:
    for sig, h in old.items():
        signal.signal(sig, h)


@contextlib.contextmanager
def frozen_heap():
    """``gc.freeze()`` for the body, undone after: the objects alive at entry (modules, the model, the
    data) are left out of every collection inside. transformers' Trainer.train() runs a full
    ``gc.collect()`` (accelerate's free_memory) once a chunk, which otherwise walks all of them (about
    0.3 s each time with torch and a model loaded). A caller that froze the heap itself keeps its freeze:
    then nothing is done."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def package_versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    return {
        "llm_unlearn": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }

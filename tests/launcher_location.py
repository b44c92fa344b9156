"""A tiny code location for the run launcher tests (tests/test_run_launcher.py)."""

import os
import time
from pathlib import Path

import dagster as dg


class MarkConfig(dg.Config):
    folder: str
    seconds: float = 0.0


@dg.op
def mark(config: MarkConfig) -> None:
    """Write this worker's pid and parent pid, then wait ``seconds``."""
    Path(config.folder, f"{os.getpid()}.pid").write_text(str(os.getppid()))
    time.sleep(config.seconds)


@dg.job(executor_def=dg.in_process_executor)
def mark_job() -> None:
    mark()

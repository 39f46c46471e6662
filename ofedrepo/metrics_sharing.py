"""Where the processes of one service write the metrics they time themselves (prometheus_client's multiprocess
mode), set up before any of them imports prometheus_client: it chooses how to store values when imported.
This module imports nothing of it for that reason; ``ofedrepo.metrics`` reads what is written."""

import os
import shutil
from pathlib import Path

#: prometheus_client's own variable: where the processes of one server write their metrics.
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(directory: Path) -> None:
    """Before starting the processes that count (web processes, a worker and its build processes), and before
    this one imports prometheus_client: they will write their metrics to ``directory`` (emptied now: counts of
    a previous run must not be added in), as children inherit the variable."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROCESS_VARIABLE] = str(directory)

"""The ``ray`` launcher: each cell is one Ray task (a local instance, or an existing cluster).

Ray places the tasks (``num_cpus``/``num_gpus`` per cell, fractions allowed so small cells share
a GPU) and retries a task whose worker process died (``max_retries=retries``: killed, node lost,
out of memory). A cell whose worker died more often than that ends ``error`` with Ray's reason.
An exception *inside* the cell is not retried: ``run_cell`` already stores it as the cell's
``error`` with its traceback. ``max_parallel`` only caps how many tasks are in flight at once
(0: as many as Ray will place).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distillbench.compat import xla_flags
from distillbench.launchers import TICK_S, Launcher, require


class RayLauncher(Launcher):
    name = "ray"

    def __init__(self, address: str = "", gpus_per_run: float = 0.0, cpus_per_run: float = 1.0,
                 max_parallel: int = 0, retries: int = 2):
        require("ray", "ray", "ray")
        self.address = address or None
        self.gpus_per_run, self.cpus_per_run = gpus_per_run, cpus_per_run
        self.max_parallel, self.retries = max_parallel, retries
        # a cell that gets a fraction of a GPU must keep JAX to that fraction of its memory
        self.memory_fraction = gpus_per_run if 0 < gpus_per_run < 1 else None
        self._started = False

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        return f"launcher ray: {where}, {self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU per cell"

    def prepare(self) -> None:
        """Start a local Ray instance or join the cluster at ``address`` (unless this process already has)."""
        import ray

        from distillbench.launchers import LauncherError

        if ray.is_initialized():
            return
        try:
            # the workers see the driver's environment (PYTHONPATH: plugins importable there too),
            # and its choice about XLA flags; run_cell sets those for each worker's own jaxlib
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                               if k in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", xla_flags.OPT_OUT)}})
        except Exception as exc:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            hint = ("start one with `ray start --head`, or leave launcher.address empty for a local instance"
                    if self.address else "check that Ray can start on this machine")
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise LauncherError(f"launcher=ray cannot reach {where} ({text}); {hint}") from None
        self._started = True

    def run(self, tasks, finished, tick, folder: Path) -> None:
        import ray

        from distillbench.runner.cell import run_cell

        self.prepare()
        remote = ray.remote(run_cell).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                              max_retries=self.retries, retry_exceptions=False)
        queue = list(tasks)
        limit = self.max_parallel or len(queue)
        pending: dict = {}
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    task = queue.pop(0)
                    pending[remote.remote(task)] = task
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=TICK_S)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        ray.get(ref)
                        error = None
                    except Exception as exc:  # the worker died more than `retries` times, or Ray failed
                        error = exc
                    finished(task, error)
                tick()
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if self._started:
                ray.shutdown()
                self._started = False


def build(address: str = "", gpus_per_run: float = 0.0, cpus_per_run: float = 1.0, max_parallel: int = 0,
          retries: int = 2) -> RayLauncher:
    return RayLauncher(address, gpus_per_run, cpus_per_run, max_parallel, retries)

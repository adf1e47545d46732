"""The ``slurm`` launcher: cells as a submitit job array on SLURM, or on submitit's local executor.

``cluster=local`` runs the very same path (pickled ``run_cell`` calls, submitit's job folder,
results and failures read back through submitit) as subprocesses of this machine: how it is
tested without SLURM. On SLURM the cells are one job array, ``array_parallelism`` of them at a
time; the local executor has no array limit of its own, so there the array is submitted in
slices of ``array_parallelism``. A job that fails outside the cell (killed, preempted, node
lost, out of time) is resubmitted up to ``retries`` times, then the cell ends ``error`` with
submitit's reason. submitit's logs and pickles live in ``folder`` (default: next to the store),
which must be on storage the nodes share: ``<job id>_submitted.pkl``, ``<job id>_<task>_log.out``...
directly in it (one folder, no per-job ``%j`` folders).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillbench.errors import ConfigError, shown
from distillbench.launchers import TICK_S, Launcher, require

#: Kernel file systems: no job folder can live there.
_PSEUDO = (Path("/proc"), Path("/sys"), Path("/dev"))
#: What a SLURM partition, account or QOS name holds (each goes into an ``#SBATCH`` line).
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:@+-]+")


def check_folder(text: str) -> str | None:
    """Why ``launcher.folder`` cannot hold submitit's job files (``None``: it can, or it is empty)."""
    if not text:
        return None
    if "\0" in text or "%" in text:
        return (f"launcher.folder={shown(text)} holds a NUL or a '%' (submitit reads %j, %t as job ids): "
                "give a plain folder path")
    path = Path(text).expanduser().absolute()
    if any(path == root or root in path.parents for root in _PSEUDO):
        return f"launcher.folder={shown(text)} is in a kernel file system: give a folder on storage the nodes share"
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if existing != path and not existing.is_dir():
        return f"launcher.folder={shown(text)}: {str(existing)!r} is a file, not a folder: give a folder path"
    if existing == path and not path.is_dir():
        return f"launcher.folder={shown(text)} is a file, not a folder: give a folder (it is created if missing)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"launcher.folder={shown(text)}: {str(existing)!r} is not writable here: give a folder you can write"
    return None


def check_params(params: Mapping[str, Any]) -> str | None:
    """The values SLURM and submitit cannot take, checked before anything starts (the component's ``validate``)."""
    for name in ("partition", "account", "qos"):
        value = params.get(name, "")
        if value and not _SLURM_NAME.fullmatch(value):
            return (f"launcher.{name}={shown(value)} is not a SLURM name (letters, digits and _.,:@+- only, "
                    f"as `sinfo`/`sacctmgr` show them)")
    return check_folder(params.get("folder", ""))


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, cluster: str = "slurm", partition: str = "", time: int = 60, gpus: int = 0, cpus: int = 1,
                 mem: float = 0.0, account: str = "", qos: str = "", array_parallelism: int = 16, folder: str = "",
                 retries: int = 1):
        problem = check_params({"partition": partition, "account": account, "qos": qos, "folder": folder})
        if problem:
            raise ConfigError(f"launcher slurm: {problem}")
        require("submitit", "slurm", install="distillbench[slurm]")
        # absolute: submitit's jobs and the driver must agree whatever their working folders
        self.cluster, self.retries = cluster, retries
        self.folder = str(Path(folder).expanduser().absolute()) if folder else ""
        self.array_parallelism = array_parallelism
        self.parameters = {"timeout_min": time, "cpus_per_task": cpus, "gpus_per_node": gpus, "nodes": 1,
                           "tasks_per_node": 1}
        if mem:
            self.parameters["mem_gb"] = mem
        slurm = {"slurm_partition": partition, "slurm_account": account, "slurm_qos": qos}
        self.parameters.update({k: v for k, v in slurm.items() if v})
        self.parameters["slurm_array_parallelism"] = array_parallelism

    def describe(self) -> str:
        where = "submitit's local executor" if self.cluster == "local" else "SLURM through submitit"
        return f"launcher slurm: {where}, jobs in {self.folder or 'the folder next to the store'}"

    def prepare(self) -> None:
        """On SLURM, ``sbatch`` must be here (the driver submits from a login node)."""
        import shutil

        from distillbench.launchers import LauncherError

        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise LauncherError("launcher=slurm needs SLURM's sbatch, which is not on PATH here: run the driver "
                                "on a login node, or use launcher.cluster=local (submitit's local executor)")

    def executor(self, logs: Path):
        """submitit's executor, its files directly in ``logs`` (a ``%j`` in the folder would leave a
        literal ``%j`` folder behind: submitit creates the folder before any job has an id)."""
        import submitit

        logs.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(folder=logs.resolve(), cluster=self.cluster)
        executor.update_parameters(name="distillbench", **self.parameters)
        return executor

    def run(self, tasks, finished, tick, folder: Path) -> None:
        from distillbench.runner.cell import run_cell

        executor = self.executor(Path(self.folder) if self.folder else folder)
        queue = list(tasks)
        slice_size = self.array_parallelism if self.cluster == "local" else len(queue)
        attempts = {task.run_id: 0 for task in queue}
        running: list = []  # (job, task)
        while queue or running:
            if queue and (self.cluster != "local" or not running):
                batch, queue = queue[:slice_size], queue[slice_size:]
                running += list(zip(executor.map_array(run_cell, batch), batch))
            still = []
            for job, task in running:
                if not job.done():
                    still.append((job, task))
                    continue
                try:
                    job.result()
                    finished(task, None)
                except Exception as exc:  # the job died (killed, preempted, out of time) or submitit failed
                    if attempts[task.run_id] < self.retries:
                        attempts[task.run_id] += 1
                        still.append((executor.submit(run_cell, task), task))
                    else:
                        finished(task, exc)
            running = still
            tick()
            if running:
                time.sleep(TICK_S)


def build(cluster: str = "slurm", partition: str = "", time: int = 60, gpus: int = 0, cpus: int = 1,
          mem: float = 0.0, account: str = "", qos: str = "", array_parallelism: int = 16, folder: str = "",
          retries: int = 1) -> SlurmLauncher:
    return SlurmLauncher(cluster, partition, time, gpus, cpus, mem, account, qos, array_parallelism, folder, retries)

"""The ``slurm`` launcher: cells as a submitit job array on SLURM, or on submitit's local executor.

``cluster=local`` runs the very same path (pickled ``run_cell`` calls, submitit's job folder,
results and failures read back through submitit) as subprocesses of this machine: how it is
tested without SLURM. On SLURM the cells are one job array, ``array_parallelism`` of them at a
time; the local executor has no array limit of its own, so there the array is submitted in
slices of ``array_parallelism``. A job that fails outside the cell (killed, preempted, node
lost, out of time) is resubmitted up to ``retries`` times, then the cell ends ``error`` with
submitit's reason. submitit's logs and pickles live in ``folder`` (default: next to the store),
which must be on storage the nodes share.
"""

from __future__ import annotations

import time
from pathlib import Path

from distillbench.launchers import TICK_S, Launcher, require


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, cluster: str = "slurm", partition: str = "", time: int = 60, gpus: int = 0, cpus: int = 1,
                 mem: float = 0.0, account: str = "", qos: str = "", array_parallelism: int = 16, folder: str = "",
                 retries: int = 1):
        require("submitit", "slurm", "slurm")
        self.cluster, self.folder, self.retries = cluster, folder, retries
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

    def run(self, tasks, finished, tick, folder: Path) -> None:
        import submitit

        from distillbench.runner.cell import run_cell

        logs = Path(self.folder) if self.folder else folder
        executor = submitit.AutoExecutor(folder=logs / "%j", cluster=self.cluster)
        executor.update_parameters(name="distillbench", **self.parameters)
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

"""Built-in launchers (declarations only; Ray and submitit are imported when one is built).

``local``: every cell in the driver's process, one after another (the default).
``ray``: each cell a Ray task, on a local Ray instance or an existing cluster (extra ``ray``).
``slurm``: cells as a submitit job array on SLURM, or on submitit's local executor (extra ``slurm``).
"""

from distillbench import Component, Param
from distillbench.launchers import ray as ray_launcher
from distillbench.launchers import slurm as slurm_launcher

#: Most CPUs and GPUs one cell may ask for: more than any single machine holds (a cell runs on one node).
MAX_CPUS_PER_RUN, MAX_GPUS_PER_RUN = 4096, 256

COMPONENTS = [
    Component(
        kind="launcher",
        name="local",
        summary="every cell in this process, one after another (the default)",
        build="distillbench.launchers.local:build",
        default=True,
    ),
    Component(
        kind="launcher",
        name="ray",
        summary="each cell a Ray task on a local Ray instance or a cluster (pip install \"distillbench[ray]\")",
        build="distillbench.launchers.ray:build",
        validate=ray_launcher.check_params,
        params=(
            Param("address", str, "", "Ray cluster to join: auto (one started with `ray start --head`), "
                  "host:port, or empty for Ray's own rule ($RAY_ADDRESS, else a local instance)"),
            Param("gpus_per_run", float, 0.0, "GPUs per cell; a fraction lets small cells share a GPU "
                  "(JAX then keeps to that fraction of its memory); above 1, whole GPUs", min=0.0, max=MAX_GPUS_PER_RUN),
            Param("cpus_per_run", float, 1.0, "CPUs per cell (one node must hold them)", min=0.0, max=MAX_CPUS_PER_RUN),
            Param("max_parallel", int, 0, "most cells in flight at once (0: as many as Ray places)", min=0),
            Param("retries", int, 2, "times a cell is retried when its worker process dies", min=0, max=100),
        ),
    ),
    Component(
        kind="launcher",
        name="slurm",
        summary="cells as a submitit job array on SLURM, or submitit's local executor "
                "(pip install \"distillbench[slurm]\")",
        build="distillbench.launchers.slurm:build",
        validate=slurm_launcher.check_params,
        params=(
            Param("cluster", str, "slurm", "slurm, or local: submitit's local executor (same path, no SLURM)",
                  choices=("slurm", "local")),
            Param("partition", str, "", "SLURM partition (empty: the cluster's default)"),
            Param("time", int, 60, "minutes a job may run", min=1),
            Param("gpus", int, 0, "GPUs per job", min=0),
            Param("cpus", int, 1, "CPUs per job", min=1),
            Param("mem", float, 0.0, "GB of memory per job (0: the partition's default)", min=0.0, max=1e6),
            Param("account", str, "", "SLURM account (empty: none)"),
            Param("qos", str, "", "SLURM quality of service (empty: none)"),
            Param("array_parallelism", int, 16, "most jobs of the array running at once", min=1),
            Param("folder", str, "", "submitit's logs and pickles, on storage the nodes share "
                  "(empty: <store>.slurm next to the store; a relative path: from the driver's working folder)"),
            Param("retries", int, 1, "times a job that died (killed, preempted, timed out) is resubmitted", min=0,
                  max=100),
        ),
    ),
]

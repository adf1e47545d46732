"""The ``ray`` launcher: each cell is one Ray task (a local instance, or an existing cluster).

Ray places the tasks (``num_cpus``/``num_gpus`` per cell, fractions allowed so small cells share
a GPU) and retries a task whose worker process died (``max_retries=retries``: killed, node lost,
out of memory). A cell whose worker died more often than that ends ``error`` with Ray's reason.
An exception *inside* the cell is not retried: ``run_cell`` already stores it as the cell's
``error`` with its traceback. ``max_parallel`` only caps how many tasks are in flight at once
(0: as many as Ray will place).

Before the store is touched, :meth:`RayLauncher.prepare` finds where the cells would run by Ray's
own rule and checks that one node there can hold a cell: a cluster's address must answer as a
Ray cluster within :data:`CONNECT_TIMEOUT_S` (a plain TCP connect and an HTTP/2 greeting, before
``ray.init``, which would otherwise wait for minutes); a local instance is only started in
:meth:`RayLauncher.run`, under the store's folder (``<store>.ray/``), with a watchdog that takes
it down with the driver (``watchdog.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillbench.compat import xla_flags
from distillbench.errors import ConfigError, shown
from distillbench.launchers import TICK_S, Launcher, LauncherError, require

#: Ray counts resources in units of 1/10,000; a smaller nonzero share is one it cannot represent.
RESOURCE_UNIT = 1e-4
#: How long the driver waits for a cluster's address to answer before it gives up.
CONNECT_TIMEOUT_S = 5.0
#: AF_UNIX socket paths hold at most 107 bytes (Linux); Ray puts its sockets at
#: ``<temp>/session_<date>_<time>_<micros>_<pid>/sockets/plasma_store``: about 70 of them.
SOCKET_PATH_MAX, SOCKET_SUFFIX = 107, 70
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>{_HOST})):(?P<port>[0-9]{{1,5}})")
_ADDRESS_FORMS = "auto, host:port (the address `ray start --head` prints), or empty for Ray's own rule"
#: While joining a cluster, Ray tries its GCS 3 times, about a second apart, instead of 20 (a user's own
#: setting wins).
_CONNECT_ENV = {"RAY_gcs_server_port_wait_time_s": "3"}
#: The HTTP/2 client preface and an empty SETTINGS frame: a Ray cluster's GCS (gRPC) answers with its SETTINGS.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_address(address: str) -> str | None:
    """Why ``launcher.address`` is not one Ray can join (``None``: it is)."""
    if address in ("", "auto"):
        return None
    if address.startswith("ray://"):
        return (f"launcher.address={shown(address)} is a Ray Client address, which this launcher does not "
                f"use: give {_ADDRESS_FORMS}")
    match = _ADDRESS.fullmatch(address)
    if match is None:
        return f"launcher.address={shown(address)} is not an address: give {_ADDRESS_FORMS}"
    if not 1 <= int(match["port"]) <= 65535:
        return f"launcher.address={shown(address)}: the port must lie within 1-65535 (Ray's default is 6379)"
    return None


def check_params(params: Mapping[str, Any]) -> str | None:
    """Ray's rules for the launcher's values, checked before anything starts (the component's ``validate``)."""
    problem = check_address(params.get("address", ""))
    if problem:
        return problem
    cpus, gpus = params.get("cpus_per_run", 1.0), params.get("gpus_per_run", 0.0)
    for name, value in (("cpus_per_run", cpus), ("gpus_per_run", gpus)):
        if 0 < value < RESOURCE_UNIT:
            return (f"launcher.{name}={value:g} is a smaller share than Ray can count (its unit is "
                    f"{RESOURCE_UNIT:g}): give 0 or at least {RESOURCE_UNIT:g}")
    if gpus > 1 and not float(gpus).is_integer():
        return (f"launcher.gpus_per_run={gpus:g}: Ray gives a cell a fraction of one GPU or whole GPUs; "
                f"give {math.floor(gpus)} or {math.ceil(gpus)}, or a fraction below 1")
    if cpus == 0 and gpus == 0 and not params.get("max_parallel", 0):
        return ("launcher.cpus_per_run=0 with launcher.gpus_per_run=0 asks Ray for nothing, so it would start "
                "every cell at once: give a share of a CPU or a GPU, or a launcher.max_parallel")
    return None


def _validated(params: Mapping[str, Any]) -> None:
    problem = check_params(params)
    if problem:
        raise ConfigError(f"launcher ray: {problem}")


class RayLauncher(Launcher):
    name = "ray"

    def __init__(self, address: str = "", gpus_per_run: float = 0.0, cpus_per_run: float = 1.0,
                 max_parallel: int = 0, retries: int = 2):
        _validated({"address": address, "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run,
                    "max_parallel": max_parallel})
        require("ray", "ray", install="distillbench[ray]")
        self.address = address or None
        self.gpus_per_run, self.cpus_per_run = gpus_per_run, cpus_per_run
        self.max_parallel, self.retries = max_parallel, retries
        # a cell that gets a fraction of a GPU must keep JAX to that fraction of its memory
        self.memory_fraction = gpus_per_run if 0 < gpus_per_run < 1 else None
        self._owns = False  # this launcher called ray.init (a local instance, or joining a cluster)
        self._watchdog: subprocess.Popen | None = None
        self._link: Path | None = None

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        return f"launcher ray: {where}, {self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU per cell"

    def _where(self, target: str | None = None) -> str:
        """The cluster as the user named it (``target``: where Ray's rule led, when they named none)."""
        address = target if target and self.address in (None, "auto") else self.address
        return f"the Ray cluster at {address}" if address else "a local Ray instance"

    def prepare(self) -> None:
        """Before the store is opened: join the cluster Ray's rule names (its address must answer within
        :data:`CONNECT_TIMEOUT_S`) and check that one of its nodes holds a cell; for a local instance,
        check this machine (the instance itself starts in :meth:`run`, under the store's folder)."""
        import ray

        if ray.is_initialized():
            self._check_fits(_cluster_nodes(), self._where())
            return
        target = self._bootstrap()
        if target is None:
            local = _local_node()
            if local is not None:
                self._check_fits([local], "this machine (a local Ray instance)", local=True)
            return
        _probe(target, self._where(target))
        self._connect(target)
        try:
            self._check_fits(_cluster_nodes(), self._where(target))
        except LauncherError:
            self._shutdown()
            raise

    def _bootstrap(self) -> str | None:
        """The cluster ``ray.init`` would join (host:port; ``$RAY_ADDRESS``, the latest ``ray start``),
        or ``None`` when it would start a local instance."""
        try:
            from ray._private.services import canonicalize_bootstrap_address
        except ImportError:  # a Ray without it: pass the address through
            return self.address
        try:
            return canonicalize_bootstrap_address(self.address, None)
        except Exception as exc:  # "auto" with no cluster running, an unresolvable host
            raise LauncherError(f"launcher=ray cannot reach {self._where()} ({_first_line(exc)}); start one "
                                "with `ray start --head`, or leave launcher.address empty for a local instance"
                                ) from None

    def _connect(self, target: str) -> None:
        import ray

        saved = {k: os.environ.get(k) for k in _CONNECT_ENV}
        os.environ.update({k: v for k, v in _CONNECT_ENV.items() if saved[k] is None})
        try:
            with _quiet_stderr():  # Ray's C++ core writes a warning a second there while it retries
                ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR,
                         runtime_env=_runtime_env())
        except Exception as exc:
            raise LauncherError(f"launcher=ray cannot join {self._where(target)} ({_first_line(exc)}); check "
                                f"launcher.address (or $RAY_ADDRESS), and that the cluster runs Ray {ray.__version__} "
                                "like this driver") from None
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
        self._owns = True

    def _start_local(self, folder: Path) -> None:
        """A local Ray instance whose temp folder is ``folder`` (a short link to it when its path is too long
        for Ray's sockets), taken down with the driver by the watchdog."""
        import ray

        temp = None if os.environ.get("RAY_TMPDIR") else _temp_dir(folder)
        if temp is not None and temp != folder:
            self._link = temp
        mode = folder.stat().st_mode & 0o7777 if temp is not None else None
        try:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env=_runtime_env(), **({"_temp_dir": str(temp)} if temp is not None else {}))
        except Exception as exc:
            self._unlink()
            raise LauncherError(f"launcher=ray cannot start a local Ray instance ({_first_line(exc)}); "
                                "check that Ray can start on this machine") from None
        finally:
            if mode is not None:
                folder.chmod(mode)  # Ray makes its temp folder writable by everyone (for other users' drivers)
        self._owns = True
        self._watchdog = _start_watchdog(str(temp or os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()),
                                         self._link)
        self._check_fits(_cluster_nodes(), self._where())

    def _check_fits(self, nodes: list[dict], where: str, local: bool = False) -> None:
        """:class:`LauncherError` unless one node holds ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
        (otherwise Ray would wait for such a node forever, silently)."""
        need = {"CPU": self.cpus_per_run, "GPU": self.gpus_per_run}
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        size = f"{largest.get('CPU', 0.0):g} CPU and {largest.get('GPU', 0.0):g} GPU"
        has = (f"{where} has {size}" if local else f"no node of {where} has them (the largest: {size})"
               if nodes else f"{where} has no live node")
        raise LauncherError(f"launcher=ray: a cell asks for {self.cpus_per_run:g} CPU and {self.gpus_per_run:g} GPU "
                            f"but {has}, so no cell would ever start; lower launcher.cpus_per_run or "
                            "launcher.gpus_per_run, or use a Ray cluster that has such a node (launcher.address)")

    def run(self, tasks, finished, tick, folder: Path) -> None:
        import ray

        if not ray.is_initialized():
            self.prepare()
        try:
            if not ray.is_initialized():
                self._start_local(Path(folder).resolve())
            self._submit(tasks, finished, tick)
        finally:
            self._shutdown()

    def _submit(self, tasks, finished, tick) -> None:
        import ray

        from distillbench.runner.cell import run_cell

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

    def _shutdown(self) -> None:
        """Leave the cluster; take down the local instance this launcher started (and its watchdog)."""
        import ray

        if self._owns:
            ray.shutdown()
        self._owns = False
        if self._watchdog is not None:
            self._watchdog.stdin.close()  # the watchdog reaps what Ray left (its agents), then exits
            try:
                self._watchdog.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None
        self._unlink()

    def _unlink(self) -> None:
        if self._link is not None and self._link.is_symlink():
            self._link.unlink(missing_ok=True)
        self._link = None


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the block (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _runtime_env() -> dict:
    """The workers see the driver's PYTHONPATH (plugins importable there too) and its choice about XLA
    flags; ``run_cell`` sets those for each worker's own jaxlib."""
    keep = ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", xla_flags.OPT_OUT)
    return {"env_vars": {k: v for k, v in os.environ.items() if k in keep}}


def _probe(target: str, where: str) -> None:
    """:class:`LauncherError` unless ``target`` (host:port) answers as a Ray cluster within :data:`CONNECT_TIMEOUT_S`."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    fix = "check launcher.address (or $RAY_ADDRESS), or start a cluster there with `ray start --head`"
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS cluster does not answer plain HTTP/2; the connection is all we check
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.sendall(_H2_HELLO)
            hello = b""
            while len(hello) < 9 and (chunk := conn.recv(9 - len(hello))):
                hello += chunk
    except (OSError, ValueError) as exc:
        why = (f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(exc, socket.timeout)
               else (getattr(exc, "strerror", None) or _first_line(exc)).lower())
        raise LauncherError(f"launcher=ray cannot reach {where} ({why}); {fix}") from None
    if len(hello) < 9 or hello[3] != 0x4:  # not an HTTP/2 SETTINGS frame: not a Ray GCS
        raise LauncherError(f"launcher=ray: what answers at {where.rpartition(' ')[2]} is not a Ray cluster; {fix}")


def _cluster_nodes() -> list[dict]:
    """The resources of every live node of the cluster this process has joined."""
    import ray

    return [dict(node.get("Resources", {})) for node in ray.nodes() if node.get("Alive")]


def _local_node() -> dict | None:
    """The CPUs and GPUs a local Ray instance would have, by Ray's own detection; ``None`` when unknown."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
        from ray._private.utils import get_num_cpus

        manager = get_accelerator_manager_for_resource("GPU")
        gpus = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        if visible is not None:
            gpus = min(gpus, len(visible))
        return {"CPU": float(get_num_cpus()), "GPU": float(gpus)}
    except Exception:  # a Ray whose internals moved: the instance's own resources are checked once started
        return None


def _temp_dir(folder: Path) -> Path:
    """``folder``, or a short link to it in the system's temp folder when Ray's socket paths under
    ``folder`` would be too long (an AF_UNIX path holds at most 107 bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(str(folder)) + SOCKET_SUFFIX <= SOCKET_PATH_MAX:
        return folder
    # one link per driver: a killed driver's watchdog removes its own link, never a re-run's
    name = f"db-ray-{hashlib.blake2b(str(folder).encode(), digest_size=6).hexdigest()}-{os.getpid()}"
    for base in (tempfile.gettempdir(), "/tmp"):
        link = Path(base) / name
        if len(str(link)) + SOCKET_SUFFIX <= SOCKET_PATH_MAX and Path(base).is_dir():
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(folder, target_is_directory=True)
            return link
    return folder


def _start_watchdog(temp_dir: str, link: Path | None) -> subprocess.Popen | None:
    """The watchdog that takes the local instance down with this process (``watchdog.py``); Linux only."""
    if not os.path.isdir("/proc"):
        return None
    script = Path(__file__).with_name("watchdog.py")
    args = [sys.executable, "-I", str(script), str(os.getpid()), temp_dir, *([str(link)] if link else [])]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def build(address: str = "", gpus_per_run: float = 0.0, cpus_per_run: float = 1.0, max_parallel: int = 0,
          retries: int = 2) -> RayLauncher:
    return RayLauncher(address, gpus_per_run, cpus_per_run, max_parallel, retries)

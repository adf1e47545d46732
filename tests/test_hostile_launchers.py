"""Hostile launcher input: every bad value is one stderr line and exit code 2, with nothing written.

One table row per input: an id, the launcher arguments and a fragment the line must contain. The
rows run in-process through click's ``CliRunner`` and fail while the launcher is planned and built,
before the store is opened (the launchers' own ``Param`` bounds and ``validate`` rules). A few
tests meet real engines, each time-bounded: a cell no node of this machine can hold, an address
where no Ray cluster answers, a cluster that has no node big enough, a driver SIGKILLed while its
local Ray instance runs, and submitit's job folder. Placeholders: ``{text}`` (a text file),
``{dir}`` (a folder) and ``{world}`` (the folder holding them and every row's store).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from distillbench.cli import main

from helpers import run_cli, tiny

EXIT_BAD_INPUT = 2
RAY = ("launcher=ray",)
SLURM = ("launcher=slurm", "launcher.cluster=local")
LONG = "h" * 10_000

#: (id, launcher arguments, fragment of the one stderr line)
CASES: list[tuple[str, tuple[str, ...], str]] = [
    # -- ray: resources per cell ---------------------------------------------------------------
    ("gpus negative", (*RAY, "launcher.gpus_per_run=-1"), "launcher.gpus_per_run=-1.0 is out of range (must be >= 0)"),
    ("cpus negative", (*RAY, "launcher.cpus_per_run=-0.5"), "launcher.cpus_per_run=-0.5 is out of range"),
    ("gpus fractional above 1", (*RAY, "launcher.gpus_per_run=1.5"), "give 1 or 2, or a fraction below 1"),
    ("gpus 2.5", (*RAY, "launcher.gpus_per_run=2.5"), "give 2 or 3, or a fraction below 1"),
    ("gpus below Ray's unit", (*RAY, "launcher.gpus_per_run=0.00001"), "smaller share than Ray can count"),
    ("cpus below Ray's unit", (*RAY, "launcher.cpus_per_run=1e-9"), "smaller share than Ray can count"),
    ("gpus huge", (*RAY, "launcher.gpus_per_run=1e9"), "(must be <= 256)"),
    ("cpus huge", (*RAY, "launcher.cpus_per_run=1e300"), "(must be <= 4096)"),
    ("gpus nan", (*RAY, "launcher.gpus_per_run=nan"), "must be a finite number"),
    ("cpus inf", (*RAY, "launcher.cpus_per_run=inf"), "must be a finite number"),
    ("cpus minus inf", (*RAY, "launcher.cpus_per_run=-inf"), "must be a finite number"),
    ("gpus a word", (*RAY, "launcher.gpus_per_run=one"), "launcher.gpus_per_run='one' is not a valid float"),
    ("cpus empty", (*RAY, "launcher.cpus_per_run="), "has an empty value"),
    ("nothing per cell", (*RAY, "launcher.cpus_per_run=0"), "asks Ray for nothing"),
    ("max_parallel negative", (*RAY, "launcher.max_parallel=-1"), "launcher.max_parallel=-1 is out of range"),
    ("max_parallel fractional", (*RAY, "launcher.max_parallel=1.5"), "is not a valid int"),
    ("max_parallel beyond int64", (*RAY, "launcher.max_parallel=" + "9" * 25), "is out of range"),
    ("ray retries negative", (*RAY, "launcher.retries=-1"), "launcher.retries=-1 is out of range (must be >= 0)"),
    ("ray retries huge", (*RAY, "launcher.retries=1000"), "(must be <= 100)"),
    ("ray retries a word", (*RAY, "launcher.retries=x"), "launcher.retries='x' is not a valid int"),
    # -- ray: addresses ------------------------------------------------------------------------
    ("address a word", (*RAY, "launcher.address=foo"), "launcher.address='foo' is not an address"),
    ("address without port", (*RAY, "launcher.address=host:"), "is not an address"),
    ("address without host", (*RAY, "launcher.address=:6379"), "is not an address"),
    ("address port 0", (*RAY, "launcher.address=10.0.0.1:0"), "the port must lie within 1-65535"),
    ("address port 70000", (*RAY, "launcher.address=10.0.0.1:70000"), "the port must lie within 1-65535"),
    ("address port of 8 digits", (*RAY, "launcher.address=10.0.0.1:99999999"), "is not an address"),
    ("address negative port", (*RAY, "launcher.address=localhost:-1"), "is not an address"),
    ("address ipv6 port 0", (*RAY, "launcher.address=[::1]:0"), "the port must lie within 1-65535"),
    ("address unix path", (*RAY, "launcher.address=/tmp/ray/gcs.sock"), "is not an address"),
    ("address unix url", (*RAY, "launcher.address=unix:///tmp/ray.sock"), "is not an address"),
    ("address http url", (*RAY, "launcher.address=http://head:8265"), "is not an address"),
    ("address ray client", (*RAY, "launcher.address=ray://head:10001"), "is a Ray Client address"),
    ("address with a space", (*RAY, "launcher.address=he ad:6379"), "is not an address"),
    ("address with a newline", (*RAY, "launcher.address=head\n:6379"), "is not an address"),
    ("address huge", (*RAY, f"launcher.address={LONG}:1"), "chars)"),
    # -- the launcher's name and keys ----------------------------------------------------------
    ("unknown launcher", ("launcher=kube",), "unknown launcher 'kube'"),
    ("misspelt launcher", ("launcher=rey",), "(did you mean 'ray'?)"),
    ("empty launcher", ("launcher=",), "has an empty value"),
    ("launcher swept", ("launcher=ray,local",), "launcher cannot be swept"),
    ("launcher param swept", (*RAY, "launcher.retries=1,2"), "launcher.retries cannot be swept"),
    ("unknown ray param", (*RAY, "launcher.gpus=1"), "unknown parameter launcher.gpus for launcher ray"),
    ("local takes no param", ("launcher=local", "launcher.retries=1"), "unknown parameter launcher.retries"),
    ("ray param on slurm", (*SLURM, "launcher.gpus_per_run=1"), "unknown parameter launcher.gpus_per_run"),
    # -- slurm: folders ------------------------------------------------------------------------
    ("folder in /proc", (*SLURM, "launcher.folder=/proc/x"), "is in a kernel file system"),
    ("folder in /sys", (*SLURM, "launcher.folder=/sys/kernel/x"), "is in a kernel file system"),
    ("folder /dev/null", (*SLURM, "launcher.folder=/dev/null"), "is in a kernel file system"),
    ("folder a file", (*SLURM, "launcher.folder={text}"), "is a file, not a folder"),
    ("folder under a file", (*SLURM, "launcher.folder={text}/logs"), "is a file, not a folder"),
    ("folder with %j", (*SLURM, "launcher.folder={dir}/%j"), "submitit reads %j"),
    ("folder huge", (*SLURM, f"launcher.folder=/proc/{LONG}"), "chars)"),
    # -- slurm: job sizes ----------------------------------------------------------------------
    ("time zero", (*SLURM, "launcher.time=0"), "launcher.time=0 is out of range (must be >= 1)"),
    ("time negative", (*SLURM, "launcher.time=-5"), "launcher.time=-5 is out of range"),
    ("time with unit", (*SLURM, "launcher.time=1h"), "launcher.time='1h' is not a valid int"),
    ("slurm gpus negative", (*SLURM, "launcher.gpus=-1"), "launcher.gpus=-1 is out of range"),
    ("slurm gpus fractional", (*SLURM, "launcher.gpus=0.5"), "launcher.gpus='0.5' is not a valid int"),
    ("slurm cpus zero", (*SLURM, "launcher.cpus=0"), "launcher.cpus=0 is out of range (must be >= 1)"),
    ("mem negative", (*SLURM, "launcher.mem=-1"), "launcher.mem=-1.0 is out of range"),
    ("mem nan", (*SLURM, "launcher.mem=nan"), "must be a finite number"),
    ("mem huge", (*SLURM, "launcher.mem=1e9"), "(must be <= 1e+06)"),
    ("array_parallelism zero", (*SLURM, "launcher.array_parallelism=0"), "is out of range (must be >= 1)"),
    ("slurm retries negative", (*SLURM, "launcher.retries=-1"), "launcher.retries=-1 is out of range"),
    ("cluster unknown", ("launcher=slurm", "launcher.cluster=kube"), "(choose from: slurm, local)"),
    # -- slurm: names that go into #SBATCH lines -------------------------------------------------
    ("partition with a space", (*SLURM, "launcher.partition=gpu part"), "is not a SLURM name"),
    ("partition with a newline", (*SLURM, "launcher.partition=gpu\n#SBATCH --exclusive"), "is not a SLURM name"),
    ("account with a semicolon", (*SLURM, "launcher.account=lab;rm"), "launcher.account='lab;rm' is not a SLURM"),
    ("qos with a command", (*SLURM, "launcher.qos=$(id)"), "launcher.qos='$(id)' is not a SLURM name"),
    ("misspelt slurm param", (*SLURM, "launcher.partitio=gpu"), "(did you mean 'partition'?)"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("launcher-world")
    (root / "dir").mkdir()
    (root / "text.csv").write_text("name,score\nalice,3\n")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _one_line(code: int, stderr: str, fragment: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("distillbench: plugin ")]
    assert code == EXIT_BAD_INPUT, (code, stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr[-3000:]
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_the_table_is_large_and_unique():
    assert len(CASES) >= 60
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case_id for case_id, _, _ in CASES])
def test_bad_launcher_value_is_one_line_exit_2_and_writes_nothing(world, index):
    _, args, fragment = CASES[index]
    places = {"text": str(world / "text.csv"), "dir": str(world / "dir"), "world": str(world)}
    store = world / "stores" / str(index) / "r.sqlite"
    before = _snapshot(world)
    argv = ["run", "--store", str(store), *[arg.format(**places) for arg in args], *tiny()]
    result = CliRunner().invoke(main, argv, env={"COLUMNS": "200"})
    _one_line(result.exit_code, result.stderr, fragment)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stdout + result.stderr and not result.stdout.strip()
    assert _snapshot(world) == before  # no store, no launcher folder, no touched file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_slurm_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = CliRunner().invoke(main, ["run", "--store", str(tmp_path / "s" / "r.sqlite"), *SLURM,
                                       f"launcher.folder={locked}/logs", *tiny()])
    _one_line(result.exit_code, result.stderr, "is not writable here")
    assert not (tmp_path / "s").exists()


def test_a_relative_slurm_folder_is_made_absolute(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from distillbench.launchers.slurm import SlurmLauncher, check_folder

    monkeypatch.chdir(tmp_path)
    assert check_folder("logs/slurm") is None and check_folder("") is None
    assert SlurmLauncher(cluster="local", folder="logs/slurm").folder == str(tmp_path / "logs" / "slurm")
    assert list(tmp_path.iterdir()) == []  # checked, not created


# -- the install hint of a missing engine (third-party launchers name their own) ------------------
@pytest.mark.parametrize("kwargs, hint", [
    ({"install": "distillbench-dask"}, 'pip install "distillbench-dask"'),
    ({"install": "dask[distributed]>=2024"}, 'pip install "dask[distributed]>=2024"'),
    ({"extra": "ray"}, 'pip install "distillbench[ray]"'),
    ({}, 'pip install "no_such_engine_4f1c"'),
])
def test_require_names_what_to_install(kwargs, hint):
    from distillbench.launchers import MissingExtra, require

    with pytest.raises(MissingExtra) as caught:
        require("no_such_engine_4f1c", "dask", **kwargs)
    text = str(caught.value)
    assert text.startswith("launcher=dask needs the 'no_such_engine_4f1c' package") and text.endswith(hint)
    assert "distillbench[" not in text or "extra" in kwargs


def test_ray_temp_folder_is_the_store_folder_or_a_short_link_to_it(tmp_path):
    from distillbench.launchers.ray import SOCKET_PATH_MAX, SOCKET_SUFFIX, _temp_dir

    deep = tmp_path / ("d" * 60) / "r.sqlite.ray"
    link = _temp_dir(deep)
    try:
        assert deep.is_dir() and link != deep and link.is_symlink() and link.resolve() == deep.resolve()
        assert len(str(link)) + SOCKET_SUFFIX <= SOCKET_PATH_MAX
    finally:
        link.unlink()
    short = Path("/tmp") / f"db{os.getpid()}.ray"
    try:
        assert _temp_dir(short) == short
    finally:
        short.rmdir()


# -- real engines, each bounded -------------------------------------------------------------------
def _run_bounded(args, tmp_path, limit=30.0):
    start = time.monotonic()
    result = run_cli(*args, cwd=tmp_path, timeout=limit + 30)
    return result, time.monotonic() - start


@pytest.mark.xdist_group("launchers")
@pytest.mark.parametrize("resource", ["gpus", "cpus"])
def test_a_cell_no_node_can_hold_is_one_line_before_the_store(tmp_path, resource):
    """Ray would wait forever for a node with that many GPUs (CPUs): refused from Ray's view of this machine."""
    pytest.importorskip("ray")
    if resource == "cpus" and (os.cpu_count() or 1) >= 4096:
        pytest.skip("this machine has 4096 CPUs")
    value = "launcher.gpus_per_run=64" if resource == "gpus" else "launcher.cpus_per_run=4096"  # more than one node has
    result, took = _run_bounded(["run", "--store", str(tmp_path / "r.sqlite"), *RAY, value, *tiny()], tmp_path)
    line = _one_line(result.returncode, result.stderr, "so no cell would ever start")
    assert "this machine" in line and took < 30, (took, line)
    assert list(tmp_path.iterdir()) == []


def _silent_listener():
    """A TCP port that accepts connections and never answers (what a wrong port often is)."""
    server = socket.socket()
    server.bind(("", 0))  # all interfaces: Ray turns 127.0.0.1 into this host's address
    server.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, held


@pytest.mark.xdist_group("launchers")
def test_unreachable_addresses_are_one_line_within_30_s(tmp_path):
    pytest.importorskip("ray")
    refused, took = _run_bounded(["run", "--store", str(tmp_path / "r.sqlite"), *RAY,
                                  "launcher.address=127.0.0.1:1", *tiny()], tmp_path)
    line = _one_line(refused.returncode, refused.stderr, "launcher=ray cannot reach the Ray cluster at 127.0.0.1:1")
    assert "connection refused" in line and took < 30, (took, line)
    server, held = _silent_listener()
    try:
        port = server.getsockname()[1]
        start = time.monotonic()
        result = CliRunner().invoke(main, ["run", "--store", str(tmp_path / "r.sqlite"), *RAY,
                                           f"launcher.address=127.0.0.1:{port}", *tiny()])
        _one_line(result.exit_code, result.stderr, f"cannot reach the Ray cluster at 127.0.0.1:{port} (no answer")
        assert time.monotonic() - start < 30
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.xdist_group("launchers")
def test_a_cluster_without_a_big_enough_node_is_one_line_before_the_store(tmp_path):
    """A driver joining a real cluster (this test's own 1-CPU instance) checks its nodes, then leaves."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        address = context.address_info["gcs_address"]
        result, took = _run_bounded(["run", "--store", str(tmp_path / "r.sqlite"), *RAY, f"launcher.address={address}",
                                     "launcher.cpus_per_run=2", *tiny()], tmp_path)
        line = _one_line(result.returncode, result.stderr, f"no node of the Ray cluster at {address} has them")
        assert "(the largest: 1 CPU and 0 GPU)" in line and took < 30, (took, line)
        assert list(tmp_path.iterdir()) == []
        assert ray.cluster_resources().get("CPU") == 1  # the cluster is still there
    finally:
        ray.shutdown()


def _session(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process of ``pid``'s session but ``pid`` itself."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        fields = text[text.rindex(")") + 2:].split()
        if entry.isdigit() and int(fields[3]) == pid and int(entry) != pid:
            found.add((int(entry), fields[19]))
    return found


def _alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    alive = set()
    for pid, start in processes:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            alive.add((pid, start))
    return alive


@pytest.mark.xdist_group("launchers")
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the watchdog reads /proc (Linux)")
def test_a_sigkilled_driver_takes_its_local_ray_down_and_kept_it_in_the_store_folder(tmp_path):
    """Only the driver is killed (not its process group): Ray's agents and workers follow within seconds."""
    pytest.importorskip("ray")
    store = tmp_path / "r.sqlite"
    args = ["run", "-q", "--store", str(store), *RAY, "launcher.max_parallel=1", *tiny("seed=0,1,2,3")]
    proc = subprocess.Popen([sys.executable, "-m", "distillbench.cli", *args], cwd=tmp_path,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    ray_folder = tmp_path / "r.sqlite.ray"
    try:
        while time.monotonic() < deadline and not list(tmp_path.glob("r.sqlite.cells/*.progress.json")):
            assert proc.poll() is None, "the driver ended before a cell started"
            time.sleep(0.2)
        assert list(ray_folder.glob("session_*/logs")), "Ray's session folder is not under the store's folder"
        ray_processes = _session(proc.pid)
        assert len(ray_processes) >= 4  # gcs, raylet, agents, a worker...
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.25)
    left = _alive(ray_processes)
    for pid, _ in left:  # do not leak them into the rest of the suite
        os.kill(pid, 9)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid, _ in left]


def test_submitit_job_folder_has_no_literal_job_id_folder(tmp_path):
    pytest.importorskip("submitit")
    from distillbench.launchers.slurm import SlurmLauncher

    launcher = SlurmLauncher(cluster="local", folder=str(tmp_path / "logs"))
    executor = launcher.executor(Path(launcher.folder))
    assert executor.folder == (tmp_path / "logs").resolve()
    assert not [p for p in tmp_path.rglob("*") if "%" in p.name]

"""The ``local`` launcher: today's behaviour, every cell in the driver's process, one after another."""

from __future__ import annotations

from distillbench.launchers import Launcher


class LocalLauncher(Launcher):
    """In process: the driver's sweep loop runs each cell (``execute``, as ``run_cell`` does)."""

    name = "local"
    in_process = True


def build() -> LocalLauncher:
    return LocalLauncher()

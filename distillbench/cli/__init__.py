"""The ``distillbench`` command line: thin click commands, one module per command.

Every command module imports only click at import time; heavy parts (the registry, rich, JAX)
are imported inside the command, so ``distillbench --help`` stays fast. Bad input exits with
code 2 and one line (``distillbench.cli.common.fail``).
"""

from __future__ import annotations

import click

from distillbench import __version__
from distillbench.cli.common import OneLineErrors
from distillbench.compat import xla_flags
from distillbench.cli.data import data
from distillbench.cli.evaluate import evaluate
from distillbench.cli.explain import explain
from distillbench.cli.list import list_components
from distillbench.cli.plugins import plugins_command
from distillbench.cli.report import report
from distillbench.cli.run import run
from distillbench.cli.store import store_group


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distillbench")
def main() -> None:
    """Benchmark kernel-based dataset distillation: any kernel x loss x objective x evaluator.

    \b
    Examples:
      distillbench run                              # KIP, exact NTK (fc1), on the embedded digits
      distillbench run kernel=rf-nngp loss=platt    # random-feature NNGP with Platt loss
      distillbench run objective=kip,ls,rfad seed=0,1,2 --dry-run
      distillbench list                             # every component and its parameters
      distillbench plugins                          # plugin packages, versions, failures
      distillbench report --format html -o board.html   # leaderboard of the results store
      distillbench evaluate evaluator=nn            # re-score stored sets, no distilling
      distillbench explain RUN_ID                   # which support images drive each prediction
      distillbench data download mnist              # real datasets into the data directory
    """
    # Before any command imports JAX: XLA reads its flags once, when JAX starts (compat/xla_flags.py).
    xla_flags.apply()


main.add_command(run)
main.add_command(list_components)
main.add_command(data)
main.add_command(report)
main.add_command(evaluate)
main.add_command(explain)
main.add_command(plugins_command)
main.add_command(store_group)

"""``python -m distillbench.cli``."""

from distillbench.cli import main

main()

"""Human-facing output: the console reporter of a run, leaderboards from stores, component listings."""

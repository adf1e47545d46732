"""Drive a planned sweep: skip cells already done, execute the rest, store each as it ends."""

from __future__ import annotations

from distillbench.registry import Registry
from distillbench.runner.execute import Outcome, execute
from distillbench.runner.plan import Plan
from distillbench.runner.reporter import Reporter
from distillbench.store.database import ResultStore


def run_sweep(plan: Plan, registry: Registry, store: ResultStore, reporter: Reporter | None = None,
              force: bool = False) -> list[Outcome]:
    from distillbench.runner.environment import collect_environment

    reporter = reporter or Reporter()
    total = len(plan.configs)
    reporter.sweep_started(total)
    environment = None
    outcomes: list[Outcome] = []
    for index, config in enumerate(plan.configs, start=1):
        record = None if force else store.get(config.run_id)
        if record is not None and record.status == "done":
            outcome = Outcome(config, record.status, record.message, record.metrics, record.timings, cached=True)
            reporter.run_cached(index, total, config.label(), record)
            outcomes.append(outcome)
            continue
        if environment is None:
            environment = collect_environment()
        outcome = execute(config, registry, reporter, plan.options.get("timeout"), index, total)
        store.save(run_id=config.run_id, status=outcome.status, message=outcome.message,
                   config=config.to_dict(), metrics=outcome.metrics, timings=outcome.timings,
                   environment=environment, arrays=outcome.arrays)
        reporter.run_finished(index, total, config.label(), outcome)
        outcomes.append(outcome)
    reporter.sweep_finished(outcomes)
    return outcomes

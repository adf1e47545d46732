"""Corruption rho and validation-based model selection (issue 3 method options)."""

import jax
import numpy as np
import pytest

from distillbench.registry import load_registry
from distillbench.runner.execute import execute
from distillbench.runner.plan import plan
from distillbench_builtin.objectives.common import target_pool

from helpers import tiny


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def _distiller(registry, *args):
    (config,) = plan(tiny(*args), registry).configs
    build = {k: registry.instantiate(k, config.choice(k).name, config.choice(k).as_dict())
             for k in ("dataset", "kernel", "loss", "objective")}
    from distillbench.components.objectives import Problem, TrainData
    from distillbench.krr import centered_one_hot

    data = build["dataset"]
    problem = Problem(data, config.ipc, build["kernel"], build["loss"], config.seed)
    distiller = build["objective"](problem)
    train = TrainData(jax.numpy.asarray(data.x_train), centered_one_hot(data.y_train, data.num_classes),
                      jax.numpy.asarray(data.y_train))
    return problem, distiller, train


@pytest.mark.parametrize("objective", ["kip", "rfad"])
def test_corrupted_pixels_never_move(registry, objective):
    _, distiller, train = _distiller(registry, f"objective={objective}", "objective.init=noise",
                                     "objective.corruption=0.5", "objective.lr=0.1")
    state0 = distiller.init(jax.random.PRNGKey(0))
    step = jax.jit(distiller.step)
    state = state0
    for i in range(5):
        state, _ = step(state, train, jax.random.PRNGKey(i))
    x0, x = np.asarray(state0.params.x), np.asarray(distiller.support(state).x)
    frozen = np.asarray(state0.movable) == 0
    assert 0.4 < frozen.mean() < 0.6
    np.testing.assert_array_equal(x[frozen], x0[frozen])
    assert np.all(x[~frozen] != x0[~frozen])


def test_validation_is_held_out_from_training_targets_only(registry):
    problem, _, _ = _distiller(registry, "objective.val_every=5", "objective.val_per_class=5")
    pool, held = target_pool(problem, 5, True)
    assert len(held) == 15 and not set(pool) & set(held)
    assert set(pool) | set(held) == set(range(len(problem.data.y_train)))
    assert np.all(np.bincount(problem.data.y_train[held]) == 5)


@pytest.mark.slow
def test_model_selection_keeps_the_best_support_and_stops_early(registry):
    # a huge learning rate makes every update worse: the best support is the initial one
    _, distiller, train = _distiller(registry, "objective.val_every=1", "objective.patience=3", "objective.val_per_class=5",
                                     "objective.lr=50", "objective.dtype=float32", "objective.steps=30")
    state0 = distiller.init(jax.random.PRNGKey(0))
    step, state = jax.jit(distiller.step), state0
    for i in range(8):
        state, _ = step(state, train, jax.random.PRNGKey(i))
    assert bool(distiller.stopped(state))
    np.testing.assert_array_equal(np.asarray(distiller.support(state).x), np.asarray(state0.params.x))
    assert not np.array_equal(np.asarray(state.params.x), np.asarray(state0.params.x))

    (config,) = plan(tiny("objective.val_every=1", "objective.patience=3", "objective.lr=50", "objective.val_per_class=5",
                          "objective.dtype=float32", "objective.steps=100000"), registry).configs
    outcome = execute(config, registry, timeout=120)
    assert outcome.status == "done", outcome.message
    assert outcome.metrics["steps_run"] == outcome.metrics["stopped_early_at"] < 100000


def test_selection_improves_when_learning_helps(registry):
    (config,) = plan(tiny("objective.val_every=2", "objective.steps=20", "objective.val_per_class=5"), registry).configs
    outcome = execute(config, registry)
    assert outcome.status == "done", outcome.message
    assert "stopped_early_at" not in outcome.metrics


@pytest.mark.parametrize("objective", ["kip", "rfad"])
@pytest.mark.slow
def test_cosine_schedule_decays_the_support_updates_to_zero(registry, objective):
    """lr_schedule=cosine: the same first step as constant, and a last step that moves nothing."""
    steps = 4
    runs = {}
    for schedule in ("constant", "cosine"):
        _, distiller, train = _distiller(registry, f"objective={objective}", f"objective.steps={steps}",
                                         "objective.lr=0.1", f"objective.lr_schedule={schedule}")
        step = jax.jit(distiller.step)
        states = [distiller.init(jax.random.PRNGKey(0))]
        for i in range(steps + 1):
            states.append(step(states[-1], train, jax.random.PRNGKey(i))[0])
        runs[schedule] = [np.asarray(s.params.x) for s in states]
    const, cos = runs["constant"], runs["cosine"]
    np.testing.assert_allclose(cos[1], const[1], rtol=1e-6, atol=1e-7)  # step 0: the full lr
    assert np.abs(cos[2] - cos[1]).max() > 0
    # step `steps` (the (steps+1)-th update) runs at lr 0: the support does not move
    np.testing.assert_array_equal(cos[steps + 1], cos[steps])
    assert np.abs(const[steps + 1] - const[steps]).max() > 0


def test_unknown_schedule_is_one_clear_line(registry):
    from distillbench.errors import ConfigError

    with pytest.raises(ConfigError, match="lr_schedule"):
        plan(tiny("objective=rfad", "objective.lr_schedule=linear"), registry)

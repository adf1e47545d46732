"""The `nn` evaluator trains real finite networks (centering, label scaling) on a support set."""

import numpy as np
import pytest

from distillbench.components.evaluators import EvalContext
from distillbench.components.objectives import Support
from distillbench.krr import centered_one_hot
from distillbench.sampling import balanced_subset
from distillbench_builtin.datasets.synthetic import build_synthetic
from distillbench_builtin.evaluators.nn import build_nn

from helpers import architecture


@pytest.fixture(scope="module")
def problem():
    data = build_synthetic(200, 150, 4, 8, 8, 1, 1.0, 0)
    idx = balanced_subset(data.y_train, 5, 4, 0)
    support = Support(data.x_train[idx], np.asarray(centered_one_hot(data.y_train[idx], 4)), {})
    ctx = EvalContext(data, None, None, {}, None, 0)
    return support, ctx


@pytest.mark.slow
def test_trains_networks_that_beat_chance_and_report_mean_std(problem):
    support, ctx = problem
    metrics = build_nn(arch=architecture("convnet3"), width=16, steps=200, lr=1e-2, seeds=3).evaluate(support, ctx)
    assert set(metrics) == {"acc", "acc_std", "mse", "nn_seeds", "eval_arch", "eval_targets", "eval_lr"}
    assert metrics["eval_arch"] == "convnet3" and metrics["eval_targets"] == "one-hot"
    assert metrics["acc"] > 0.6 and metrics["nn_seeds"] == 3.0  # chance is 0.25
    assert 0 < metrics["acc_std"] < 0.3


def test_untrained_centered_network_predicts_zero(problem):
    support, ctx = problem
    zero = build_nn(arch=architecture("fc1"), width=16, steps=1, lr=1e-12, seeds=2).evaluate(support, ctx)
    # with centering, f(x) - f0(x) stays ~0 when the weights barely move: mse ~ mean of y^2
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert zero["mse"] == pytest.approx(expected, rel=1e-3)


def test_learned_labels_are_the_regression_targets_never_argmaxed(problem):
    support, ctx = problem
    rng = np.random.default_rng(3)
    learned = support.y + rng.normal(0.0, 0.3, support.y.shape)  # soft labels, same argmax as a rule
    argmaxed = np.asarray(centered_one_hot(learned.argmax(-1), 4))
    evaluator = build_nn(arch=architecture("fc1"), width=16, steps=30, lr=1e-2, seeds=1)
    on_learned = evaluator.evaluate(Support(support.x, learned, {}), ctx)
    on_argmaxed = evaluator.evaluate(Support(support.x, argmaxed, {}), ctx)
    assert on_learned["eval_targets"] == "learned" and on_argmaxed["eval_targets"] == "one-hot"
    assert on_learned["mse"] != on_argmaxed["mse"]  # trained towards different targets


@pytest.mark.parametrize("y,kind", [
    ([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], "one-hot"),
    ([[2 / 3, -1 / 3, -1 / 3], [-1 / 3, 2 / 3, -1 / 3]], "one-hot"),  # centred
    ([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]], "learned"),
    ([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "learned"),  # two classes high in a row: not one class's code
])
def test_the_target_kind_is_read_from_the_labels(y, kind):
    from distillbench_builtin.evaluators.nn import target_kind

    assert target_kind(np.asarray(y)) == kind


def test_same_seed_same_numbers(problem):
    support, ctx = problem
    evaluator = build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=2)
    assert evaluator.evaluate(support, ctx) == evaluator.evaluate(support, ctx)


def _reference_mse(output, output_0, y, label_scale):
    """Transcription of the RFAD reference (training.py, ``loss_mode == 'mse'``, full batch):
    ``y_batch = label_scale * y_train``; ``torch.mean((output - output_0 - y_batch)**2) / label_scale**2``."""
    y_batch = label_scale * y
    return np.mean((output - output_0 - y_batch) ** 2) / label_scale**2


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("label_scale", [1.0, 2.0, 8.0])
def test_loss_is_the_reference_mean_over_all_entries(num_classes, label_scale):
    import jax
    import jax.numpy as jnp

    from distillbench_builtin.evaluators.nn import reference_loss

    rng = np.random.default_rng(num_classes)
    n = 37
    out, out0 = rng.normal(size=(2, n, num_classes))
    y = np.asarray(centered_one_hot(rng.integers(0, num_classes, n), num_classes), np.float64)
    centered = jnp.asarray(out - out0, jnp.float64)
    ours = float(reference_loss(centered, jnp.asarray(y), label_scale))
    assert ours == pytest.approx(_reference_mse(out, out0, y, label_scale), rel=1e-12, abs=1e-12)
    # gradient w.r.t. the outputs: d/df of mean((f - a y)^2)/a^2 = 2 (f - a y) / (n C a^2)
    grad = np.asarray(jax.grad(reference_loss)(centered, jnp.asarray(y), label_scale))
    expected = 2 * (out - out0 - label_scale * y) / (n * num_classes * label_scale**2)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_early_stopping_keeps_the_best_network_from_training_validation(problem):
    support, ctx = problem
    # lr 1e38 overflows at once: no later network validates strictly better than the untrained one,
    # which (centered) predicts 0 everywhere, and training stops `patience` steps after step 0
    metrics = build_nn(arch=architecture("fc1"), width=16, steps=10_000, lr=1e38, seeds=2, val_every=1, patience=3,
                       val_per_class=20).evaluate(support, ctx)
    assert metrics["nn_best_step"] == 0.0
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert metrics["mse"] == pytest.approx(expected, rel=1e-6)
    # a sane rate improves on the untrained network and keeps a later step
    good = build_nn(arch=architecture("fc1"), width=16, steps=300, lr=1e-1, seeds=2, val_every=20, patience=500,
                    val_per_class=20).evaluate(support, ctx)
    assert good["nn_best_step"] > 0 and good["nn_val_acc"] > 0.5 and good["acc"] > 0.5


def test_validation_comes_from_the_training_split_per_class():
    from distillbench_builtin.evaluators.nn import validation_indices, validation_per_class

    assert validation_per_class(10, None) == 500 and validation_per_class(100, None) == 100
    assert validation_per_class(10, 7) == 7
    labels = np.repeat(np.arange(4), [30, 12, 25, 40])
    idx = validation_indices(labels, 4, 20, seed=0)
    assert np.all(np.bincount(labels[idx]) == 12)  # capped by the smallest class
    assert len(set(idx.tolist())) == len(idx)


@pytest.mark.parametrize("augment", ["flip", "dsa", "frepo", "rcig"])
def test_augmentation_changes_training_and_keeps_it_deterministic(problem, augment):
    """Each step sees a fresh augmentation of the support, seeded by the run: the networks differ
    from the unaugmented ones, and the same seed gives the same numbers."""
    support, ctx = problem
    plain = build_nn(arch=architecture("convnet3"), width=8, steps=30, lr=1e-2, seeds=1).evaluate(support, ctx)
    runs = [build_nn(arch=architecture("convnet3"), width=8, steps=30, lr=1e-2, seeds=1, augment=augment)
            .evaluate(support, ctx) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0]["mse"] != plain["mse"]


def test_no_normalization_keeps_the_reference_network_and_its_numbers(problem):
    """normalization=none on an architecture with a stax form trains the RFAD reference's network (the
    trunk under a Dense readout) as before the option existed: these numbers were recorded before it."""
    support, ctx = problem
    metrics = build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=2).evaluate(support, ctx)
    assert metrics["acc"] == 0.98 and metrics["acc_std"] == pytest.approx(0.009428090415820616, rel=1e-6)
    assert metrics["mse"] == pytest.approx(0.1185242161154747, rel=1e-6)


def _first_network(arch: str, normalization: str, x):
    """The evaluator's network for ``arch`` (3 classes, width 4): the shapes of ``(params, stats)`` as
    initialised (traced, not computed)."""
    import jax
    import jax.numpy as jnp

    from distillbench_builtin.evaluators.nn import _net

    init = _net(architecture(arch), 4, 3, normalization, jnp.asarray(x, jnp.float32)).init
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def test_the_architecture_network_serves_normalizations_and_finite_only_architectures(problem):
    support, _ = problem
    params, stats = _first_network("convnet3", "none", support.x)
    assert set(params["params"]) == {"Trunk_0", "Dense_0"} and stats == {}  # the reference's network
    params, stats = _first_network("convnet3", "batch", support.x)
    assert "readout" in params["params"] and set(stats) == {"batch_stats"}  # arch.network
    params, stats = _first_network("frepo-conv", "none", support.x)  # no stax: its own network, readout included
    assert set(params["params"]) == {"Conv_0", "Conv_1", "Conv_2", "Dense_0"} and stats == {}


@pytest.mark.slow
@pytest.mark.parametrize("arch,normalization", [("convnet3", "batch"), ("convnet3", "instance"),
                                                ("frepo-conv", "none"), ("fc1", "batch")])
def test_untrained_centered_network_predicts_zero_through_the_architecture_network(problem, arch, normalization):
    """The initial network's running statistics follow the same batches as the trained one's, so an
    untrained centered network predicts 0 in evaluation whatever the normalization."""
    support, ctx = problem
    zero = build_nn(arch=architecture(arch), width=4, steps=2, lr=1e-30, seeds=1,
                    normalization=normalization).evaluate(support, ctx)
    expected = np.mean(np.asarray(centered_one_hot(ctx.data.y_test, 4)) ** 2)
    assert zero["mse"] == pytest.approx(expected, rel=1e-6) and zero["eval_arch"] == arch


@pytest.mark.slow
def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_averages(problem):
    import jax
    import jax.numpy as jnp
    import optax

    from distillbench_builtin.evaluators.nn import _net, _program, _train

    support, ctx = problem
    x_s = jnp.asarray(support.x, jnp.float32)
    net = _net(architecture("convnet3"), 4, 4, "batch", x_s)
    program = _program(net, jnp.asarray(support.y, jnp.float32), optax.sgd(1e-2, momentum=0.9), 2.0, True, 500, "none", x_s)
    w0 = program.init(jax.random.PRNGKey(0))
    (trained, w0_followed), _, _ = _train(program, w0, 3, 0, 1, None, None)
    changed = lambda a, b: any(not np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert changed(trained[1], w0[1]) and changed(w0_followed[1], w0[1])  # both running averages moved
    assert not changed(w0_followed[0], w0[0])  # the initial network's parameters did not
    # evaluation uses the running averages: other statistics, other predictions
    x = ctx.data.x_test[:20]
    ours = program.outputs_on(trained, w0_followed, x)
    assert not np.allclose(ours, program.outputs_on((trained[0], w0[1]), w0_followed, x))
    logits, _ = net.apply(*trained, jnp.asarray(x), False)
    logits0, _ = net.apply(*w0_followed, jnp.asarray(x), False)
    np.testing.assert_allclose(ours, (logits - logits0) / 2.0, rtol=1e-5, atol=1e-6)


def test_a_normalization_the_network_does_not_offer_is_one_line():
    from distillbench_builtin.evaluators import COMPONENTS

    with pytest.raises(ValueError, match=r"^fc1's network has no normalization 'instance' \(choose from: none, "
                                         r"batch\)$"):
        build_nn(arch=architecture("fc1"), normalization="instance")
    (nn_component,) = [c for c in COMPONENTS if c.name == "nn"]
    # refused before any compute (exit 2) where the architecture is a built-in one named
    assert nn_component.validate({"arch": "fc3", "normalization": "instance"}) == (
        "normalization=instance: fc3's network has no instance normalization (choose from: none, batch)")
    assert nn_component.validate({"arch": "convnet3", "normalization": "instance"}) is None
    assert nn_component.validate({"arch": "auto", "normalization": "instance"}) is None  # resolved when built


@pytest.mark.slow
def test_a_stored_learned_label_set_is_trained_on_its_labels_and_says_so(tmp_path):
    import json
    import sqlite3

    from helpers import run_cli

    store = tmp_path / "r.sqlite"
    common = ("--store", str(store), "dataset=digits", "ipc=1", "objective.steps=3", "evaluator=nn",
              "evaluator.width=4", "evaluator.steps=3", "evaluator.seeds=1")
    for learn in ("true", "false"):
        result = run_cli("run", *common, f"objective.learn_labels={learn}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(store) as db:
        rows = [(json.loads(c)["objective"]["params"]["learn_labels"], json.loads(m)) for c, m in
                db.execute("select config, metrics from runs where status = 'done'")]
    assert sorted((learn, m["eval_targets"]) for learn, m in rows) == [(False, "one-hot"), (True, "learned")]


def test_lr_auto_chooses_on_training_data_and_records_it(problem):
    from distillbench_builtin.evaluators.nn import LR_GRID

    support, ctx = problem
    evaluator = build_nn(arch=architecture("fc1"), width=16, steps=40, lr=None, seeds=1, val_per_class=10)
    metrics = evaluator.evaluate(support, ctx)
    assert metrics["eval_lr"] in LR_GRID and 0.0 <= metrics["nn_lr_val_acc"] <= 1.0
    # the test split is never used to choose: scrambled test labels and images, the same choice
    data = ctx.data
    rng = np.random.default_rng(0)
    scrambled = data._replace(x_test=rng.standard_normal(np.shape(data.x_test)).astype(np.float32),
                              y_test=rng.permutation(np.asarray(data.y_test)))
    again = evaluator.evaluate(support, ctx._replace(data=scrambled))
    assert (again["eval_lr"], again["nn_lr_val_acc"]) == (metrics["eval_lr"], metrics["nn_lr_val_acc"])
    fixed = build_nn(arch=architecture("fc1"), width=16, steps=40, lr=3e-3, seeds=1).evaluate(support, ctx)
    assert fixed["eval_lr"] == 3e-3 and "nn_lr_val_acc" not in fixed


def _frepo_ema(values, decay):
    """Transcription of FRePo's ``EMA(decay, debias=True)`` (lib/training/utils.py) over a sequence:
    hidden <- (1 - decay) value + decay hidden from zeros, average = hidden / (1 - decay**count)."""
    hidden = np.zeros_like(values[0])
    for count, value in enumerate(values, 1):
        hidden = (1 - decay) * value + decay * hidden
    return hidden / (1 - decay**count)


def test_ema_scores_frepos_debiased_average_of_the_parameters(problem):
    import jax
    import jax.numpy as jnp
    import optax

    from distillbench_builtin.evaluators.nn import _net, _program, _train

    support, ctx = problem
    x_s = jnp.asarray(support.x, jnp.float32)
    net = _net(architecture("fc1"), 8, 4, "none", x_s)
    y_s = jnp.asarray(support.y, jnp.float32)
    plain = _program(net, y_s, optax.adam(1e-2), 2.0, True, 500, "none", x_s)
    averaged = _program(net, y_s, optax.adam(1e-2), 2.0, True, 500, "none", x_s, ema=0.9)
    w0 = plain.init(jax.random.PRNGKey(0))
    path = [_train(plain, w0, k, 0, 1, None, None)[0][0][0] for k in (1, 2, 3)]  # the parameters after 1, 2, 3 steps
    (scored, _), _, _ = _train(averaged, w0, 3, 0, 1, None, None)
    for got, *steps in zip(jax.tree.leaves(scored[0]), *(jax.tree.leaves(p) for p in path)):
        np.testing.assert_allclose(got, _frepo_ema([np.asarray(s) for s in steps], 0.9), rtol=1e-5, atol=1e-7)


def test_warmup_cosine_starts_at_zero_and_adam_trains(problem):
    import jax
    import jax.numpy as jnp

    from distillbench_builtin.evaluators.nn import _net, _program, _train, make_optimizer

    support, ctx = problem
    x_s = jnp.asarray(support.x, jnp.float32)
    net = _net(architecture("fc1"), 8, 4, "none", x_s)
    program = _program(net, jnp.asarray(support.y, jnp.float32), make_optimizer("adam", 1e-2, 0.9, "warmup-cosine", 5, 20),
                       1.0, False, 500, "none", x_s)
    w0 = program.init(jax.random.PRNGKey(0))
    first = _train(program, w0, 1, 0, 1, None, None)[0][0]
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first[0]), jax.tree.leaves(w0[0])))  # lr 0 at step 0
    later = _train(program, w0, 6, 0, 1, None, None)[0][0]
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(later[0]), jax.tree.leaves(w0[0])))
    metrics = build_nn(arch=architecture("fc1"), width=16, steps=30, lr=1e-2, seeds=1, optimizer="adam",
                       schedule="warmup-cosine", warmup=5, ema=0.9, centering=False, label_scale=1.0).evaluate(support, ctx)
    assert metrics["acc"] > 0.25  # 4 classes: above chance


def test_minibatches_train_on_fresh_draws_deterministically(problem):
    """``batch=n`` trains on a fresh minibatch of n distinct images each step (RCIG's and DC's
    evaluation): other networks than full-batch ones, the same bits for the same seed; a batch as
    large as the set is the full-batch step itself."""
    support, ctx = problem  # 20 images
    full = build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=1).evaluate(support, ctx)
    whole = build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=1, batch=20).evaluate(support, ctx)
    assert whole == full
    runs = [build_nn(arch=architecture("fc1"), width=16, steps=20, seeds=1, batch=8).evaluate(support, ctx)
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]["mse"] != full["mse"]


def test_the_whole_training_split_trains_in_minibatches_without_its_validation_images(problem):
    """Scored as the whole training split (``full_data``), ``batch=none`` means minibatches of 256, and
    the images early stopping validates on are left out of training."""
    from distillbench_builtin.evaluators import nn

    _, ctx = problem
    data = ctx.data
    whole = Support(data.x_train, np.asarray(centered_one_hot(data.y_train, 4)), {})
    seen = []
    original = nn._program

    def spy(net, y_s, tx, *args):
        seen.append((len(y_s), args[6]))  # the minibatch
        return original(net, y_s, tx, *args)

    nn._program = spy
    try:
        kwargs = dict(arch=architecture("fc1"), width=8, steps=3, seeds=1, val_every=1, val_per_class=5)
        build_nn(**kwargs).evaluate(whole, ctx._replace(full_data=True))
        build_nn(**kwargs).evaluate(whole, ctx)
    finally:
        nn._program = original
    assert seen == [(200 - 4 * 5, nn.FULL_DATA_BATCH), (200, None)]


def _rates(tx, steps: int) -> list[float]:
    """The rate ``tx`` (SGD without momentum) applies at each of ``steps`` steps: minus its update of a
    parameter whose gradient is 1."""
    import jax.numpy as jnp

    state, out = tx.init(jnp.zeros(())), []
    for _ in range(steps):
        update, state = tx.update(jnp.ones(()), state)
        out.append(-float(update))
    return out


def test_the_schedule_spans_schedule_steps_then_keeps_its_last_rate():
    """RCIG's eval.py (a transcription): ``optax.join_schedules([linear_schedule(0, lr, 500),
    cosine_decay_schedule(lr, alpha=0.01, decay_steps=max(n - 500, 1))], [500])`` with n = 1000 updates
    (a 10-image set) while training 2500 steps without augmentation; later steps keep 1% of lr."""
    import optax

    from distillbench_builtin.evaluators.nn import make_optimizer

    lr, n, trained = 1e-4, 1000, 2500
    reference = optax.join_schedules([optax.linear_schedule(0.0, lr, 500),
                                      optax.cosine_decay_schedule(lr, max(n - 500, 1), alpha=0.01)], [500])
    ours = _rates(make_optimizer("sgd", lr, 0.0, "warmup-cosine", 500, n), trained)
    # float32 rates against the reference's float64 schedule values: 3e-5 relative at most
    assert ours == pytest.approx([float(reference(i)) for i in range(trained)], rel=1e-4, abs=1e-12)
    assert ours[-1] == pytest.approx(0.01 * lr)


def test_cross_entropy_trains_on_classes_or_distributions_and_refuses_regression_rows(problem):
    from distillbench_builtin.evaluators.nn import cross_entropy_targets

    support, ctx = problem
    codes = cross_entropy_targets(support.y)  # centred one-hot rows -> their classes, one-hot
    assert np.array_equal(codes.argmax(-1), support.y.argmax(-1)) and set(np.unique(codes)) == {0.0, 1.0}
    soft = np.full_like(support.y, 0.1) + 0.6 * codes
    assert np.array_equal(cross_entropy_targets(soft), soft.astype(np.float32))
    with pytest.raises(ValueError, match="evaluator.loss=mse"):
        cross_entropy_targets(support.y + np.random.default_rng(0).normal(0.0, 0.1, support.y.shape))
    kwargs = dict(arch=architecture("fc1"), width=16, steps=40, seeds=1, optimizer="adam", lr=1e-2)
    ce = build_nn(loss="cross-entropy", **kwargs).evaluate(support, ctx)
    mse = build_nn(**kwargs).evaluate(support, ctx)
    assert ce["acc"] > 0.5 and ce["mse"] != mse["mse"]  # chance is 0.25; other networks


def test_mirror_trains_on_the_set_and_its_mirror_images(problem):
    """``mirror`` (RCIG's use_flip) is the same as scoring the set with its mirror images appended."""
    support, ctx = problem
    kwargs = dict(arch=architecture("fc1"), width=8, steps=5, seeds=1)
    mirrored = build_nn(mirror=True, **kwargs).evaluate(support, ctx)
    doubled = Support(np.concatenate([support.x, support.x[:, :, ::-1]]), np.concatenate([support.y, support.y]), {})
    assert mirrored == build_nn(**kwargs).evaluate(doubled, ctx)
    assert mirrored != build_nn(**kwargs).evaluate(support, ctx)

"""The FRePo reference's own distillation loop (``yongchao97/FRePo``), fed arrays directly: the
reference column of ``cross_reference.py --method frepo``.

It runs in its own process (the reference's JAX configuration: x64 off), started by the harness::

    python benchmarks/frepo_reference_loop.py REFERENCE SPLIT.npz START.npz OUT.npz SETTINGS_JSON

``SPLIT``: the standardized training images (NHWC) and integer labels distillbench distills;
``START``: the starting images (distillbench's ``baseline_x``) and their integer labels; ``OUT``:
the reference's support and labels after ``steps`` steps. Every piece is the reference's function,
imported from the checkout (``import_reference`` of ``bench_frepo_vs_reference.py``: stubs for
what it imports but never calls here, the ``sym_pos`` shim); the loop around them transcribes
``lib/datadistillation/frepo.py:proto_train_and_evaluate``, with the settings of
``script/distill.py:main`` for MNIST (pieces cited below).

Where this loop is not the reference's, or does what distillbench cannot take as a setting:

* targets: the reference draws 1024-image batches from tf.data (``lib/dataset/dataloader.py:
  configure_dataloader``: ``repeat``, ``shuffle(16 * 1024, seed=0)``, ``batch``); here the same
  stream is cut from numpy permutations of the training set, one per epoch, seeded 0 as that
  shuffle is (the same targets for every run seed; tf's exact order needs TensorFlow).
  distillbench draws each step's 1024 uniformly without replacement from its run key
  (``uniform`` sampler; no epoch-stream sampler exists);
* the pool's next network: the reference's ``np.random.randint`` on numpy's global generator,
  which it never seeds; here seeded with the run seed;
* the loop's key stream: the reference's, splits included that only its periodic evaluation uses
  (5 at step 1 and every 10,000 steps); the evaluation itself, logging, checkpoints (``resume``)
  and image saving are left out: none changes the support;
* the solve: the reference's float32 ``solve(sym_pos=True)`` (x64 off); distillbench's is a float64
  Cholesky (not a setting);
* XLA:CPU flags: distillbench's (``benchmarks/common.py``, imported with ``bench_frepo_vs_reference``),
  as in the step benchmark; so the Python that runs this module must import distillbench.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
import types
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_frepo_vs_reference import _FrozenInit, import_reference, reference_steps  # noqa: E402

#: ``proto_train_and_evaluate``: the steps at which it evaluates (``log_steps``, ``steps_per_eval``
#: of ``script/distill.py``) and the networks each evaluation draws a key for (``num_eval``).
LOG_STEPS, STEPS_PER_EVAL, NUM_EVAL = (1, 3000, 10000, 30000, 100000), 10000, 5
#: ``configure_dataloader(..., seed=0)``: the train stream's shuffle seed, whatever the run seed.
SHUFFLE_SEED = 0


class Loop(NamedTuple):
    """The reference's jitted pieces, as ``proto_train_and_evaluate`` builds them."""

    train_step: Any  # jit_fn's jit_train_step: proto_train_step (nfr + label margin, LAMB)
    online_step: Any  # jit_fn's jit_nn_train_step_online: training.utils.train_step
    create_online: Any  # jax.jit(create_online_state)
    sample: Any  # jax.jit(get_sample_proto)
    features: Any  # jax.jit(nn_feat_fn)
    process_batch: Any  # training.utils.process_batch


def centred_one_hot(labels, num_classes: int) -> np.ndarray:
    """``script/distill.py``'s ``y_transform``: on 1 − 1/C, off −1/C."""
    return np.where(np.eye(num_classes, dtype=bool)[labels], 1 - 1 / num_classes, -1 / num_classes).astype(np.float32)


def initial_labels(labels, num_classes: int) -> np.ndarray:
    """``frepo.py:init_proto(scale_y=True)``: one-hot − 1/C, divided by sqrt(C / 10)."""
    y = np.eye(num_classes, dtype=np.float32)[labels] - 1 / num_classes
    return (y / np.sqrt(num_classes / 10)).astype(np.float32)


def target_batches(n: int, batch: int):
    """Indices of the train stream's batches: shuffled epochs, cut into ``batch``-sized pieces
    across epoch ends (``repeat`` before ``batch``)."""
    rng = np.random.default_rng(SHUFFLE_SEED)
    order = np.empty(0, np.int64)
    while True:
        while len(order) < batch:
            order = np.concatenate([order, rng.permutation(n)])
        yield order[:batch]
        order = order[batch:]


def build(ref, s: dict, image_shape) -> Loop:
    """The pieces of ``proto_train_and_evaluate`` with ``script/distill.py``'s online network."""
    import jax

    frepo, utils, metrics, model_utils = ref
    has_bn = s["normalization"] == "batch"  # script/distill.py: has_bn = normalization == 'batch'
    config = types.SimpleNamespace(img_size=image_shape[0], img_channels=image_shape[-1], optimizer="adam")
    online_model = model_utils.create_model("conv", s["num_classes"], width=s["width"], depth=3,
                                            normalization=s["normalization"], output="feat_fc")
    create_online_state = functools.partial(utils.create_train_state, config=config, model=online_model,
                                            learning_rate_fn=lambda x: s["online_lr"], has_bn=has_bn)
    feat_fn, train_step, online_step = reference_steps(frepo, utils, metrics, has_bn)
    sample = jax.jit(functools.partial(frepo.get_sample_proto, use_pmap=False, bs=s["sample_batch"]))
    return Loop(train_step, online_step, jax.jit(create_online_state), sample, jax.jit(feat_fn),
                utils.process_batch)


def initial_state(ref, loop: Loop, s: dict, x0, y0):
    """``proto_train_and_evaluate``'s setup: the support's LAMB state, the staggered pool, the key."""
    import jax
    import optax

    frepo = ref[0]
    rng = jax.random.PRNGKey(s["seed"])
    rng, _ = jax.random.split(rng)
    rng, _ = jax.random.split(rng)
    learning_rate_fn = optax.cosine_decay_schedule(init_value=s["lr"], decay_steps=s["steps"], alpha=0.1)
    ph = frepo.ProtoHolder(x0, y0, len(y0), learn_label=s["learn_labels"])
    state = frepo.create_proto_state(rng, _FrozenInit(ph), learning_rate_fn, optimizer="lamb")
    pool = []
    for i in range(s["pool"]):
        rng, init_rng = jax.random.split(rng)
        nn_state = loop.create_online(init_rng)
        pool.append(dataclasses.replace(nn_state, **{"step": (s["max_updates"] // s["pool"]) * i}))
    return state, pool, rng


def distill(ref, s: dict, x_train, y_train, x0, y0):
    """The loop of ``proto_train_and_evaluate``; the support and labels after ``steps`` steps."""
    import jax
    import jax.numpy as jnp

    loop = build(ref, s, x_train.shape[1:])
    state, pool, rng = initial_state(ref, loop, s, x0, y0)
    np.random.seed(s["seed"])
    idx = np.random.randint(low=0, high=s["pool"])
    nn_state, batches, started = pool[idx], target_batches(len(x_train), s["targets"]), time.perf_counter()
    for step in range(s["steps"]):
        rng, _ = jax.random.split(rng)
        b = next(batches)
        image, label = loop.process_batch((x_train[b], y_train[b]), use_pmap=False, dtype=jnp.float32)
        state, metrics = loop.train_step(state, nn_state, {"image": loop.features(image, nn_state), "label": label})
        if (step + 1) in LOG_STEPS or (step + 1) % STEPS_PER_EVAL == 0:
            for _ in range(NUM_EVAL):  # the keys of the evaluation networks (not run here)
                rng, _ = jax.random.split(rng)
        if nn_state.step > s["max_updates"]:
            rng, init_rng = jax.random.split(rng)
            nn_state = loop.create_online(init_rng)
        else:
            rng, train_rng = jax.random.split(rng)
            img, lb = loop.sample(state, train_rng)
            nn_state, _ = loop.online_step(nn_state, {"image": img, "label": lb}, train_rng)
        pool[idx] = nn_state
        idx = np.random.randint(low=0, high=s["pool"])
        nn_state = pool[idx]
        if step == 0:
            jax.block_until_ready(state)
            print(f"reference: compile + first step {time.perf_counter() - started:.1f} s", flush=True)
            started = time.perf_counter()
        if (step + 1) % 100 == 0 or step + 1 == s["steps"]:
            print(f"reference step {step + 1}: loss {float(metrics['total_loss']):.6g} "
                  f"kernel loss {float(metrics['kernel_loss']):.6g} acc {float(metrics['accuracy']):.4f}", flush=True)
    jax.block_until_ready(state)
    if s["steps"] > 1:
        print(f"reference: {(time.perf_counter() - started) / (s['steps'] - 1):.3f} s a step after the first", flush=True)
    x, y = ref[0].get_proto(state, use_pmap=False)
    return np.asarray(x), np.asarray(y)


def main() -> None:
    reference, split, start, out, settings = sys.argv[1:6]
    s = json.loads(settings)
    ref = import_reference(reference)
    with np.load(split) as d:
        x_train, labels = d["x_train"].astype(np.float32), d["y_train"]
    with np.load(start) as d:
        x0, labels0 = d["x"].astype(np.float32), d["labels"]
    c = s["num_classes"]
    x, y = distill(ref, s, x_train, centred_one_hot(labels, c), x0, initial_labels(labels0, c))
    np.savez(out, x=x, y=y)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()

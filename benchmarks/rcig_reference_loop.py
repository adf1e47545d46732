"""The RCIG reference's own distillation (``yolky/RCIG``), fed arrays directly: the reference column
of ``cross_reference.py --method rcig``.

It runs in its own process, in the reference's environment (its jax; x64 off, as it runs)::

    python benchmarks/rcig_reference_loop.py REFERENCE SPLIT.npz START.npz OUT.npz SETTINGS_JSON

``SPLIT``: the standardized training images (NHWC) and integer labels distillbench distills;
``START``: the starting images (distillbench's ``baseline_x``) and their integer labels; ``OUT``:
the support the reference keeps (``ema_average``'s ``x_proto`` and ``y_proto``, what
``distill_dataset.py`` saves and ``eval.py`` scores) after ``steps`` steps.

What runs is the reference's own code: ``algorithms.run_rcig`` (the pool, the inner problem, the
implicit meta step, the pool's training and resets, the inner learning rate's adaptation, the
moving average), called as ``distill_dataset.py:main`` calls it, tuning included (its ``while``
loops over ``run_rcig(..., lr_tune=True)`` are transcribed below), with the config file
``configs_final/depth_3_no_flip.txt`` of the checkout (MNIST's) read as ``main`` reads it. The
settings JSON overrides what the CPU setting changes, each a key of that config or of ``main``:
``proto_learning_rate``, ``max_steps``, ``pool_model_count``, ``n_inner_steps``, ``n_hinv_steps``,
``l2_rate`` (``l2 = l2_rate x support size``), ``learn_labels``, the network's ``width``, ``random_seed``.

Where this is not the reference's ``main``:

* data: the reference reads tensorflow_datasets and standardizes (``dataloader.py:get_dataset``);
  here the split distillbench distills, standardized by distillbench, and its starting images
  instead of ``init_proto``'s (the same start on both sides);
* targets: ``configure_dataloader`` (``repeat``, ``shuffle(16 * batch, seed=0)``, ``batch``,
  labels one-hot centred as ``main``'s ``y_transform``) is replaced by batches cut from numpy
  permutations of the training set, one per epoch, seeded 0 as that shuffle is; each ``run_rcig``
  call starts the stream again, as a new ``as_numpy_iterator()`` does;
* on this jax: ``jax.jit``'s static argument names a function does not take are dropped,
  ``jax.devices('gpu')`` is the CPU (``bench_rcig_vs_reference._shim``), ``torch`` is stubbed
  (imported, unused), and the network's and ``ProtoHolder``'s ``init`` return FrozenDicts (for
  their ``.unfreeze()`` calls, written for an older flax);
* logging, checkpoints and the output folder are off (``output_dir=None``): none changes the support.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
#: ``configure_dataloader(..., seed=0)``: the target stream's shuffle seed, whatever the run seed.
SHUFFLE_SEED = 0
CONFIG = "configs_final/depth_3_no_flip.txt"


class ArrayLoader:
    """``ds_train`` for ``run_rcig``: ``as_numpy_iterator()`` yields (images, centred one-hot labels)
    batches of a numpy-shuffled stream, one permutation per epoch."""

    def __init__(self, x, y, batch: int, num_classes: int):
        self.x, self.batch = x.astype(np.float32), batch
        self.y = (np.eye(num_classes, dtype=np.float32) - 1.0 / num_classes)[y]

    def as_numpy_iterator(self):
        rng = np.random.default_rng(SHUFFLE_SEED)
        order = np.empty(0, dtype=np.int64)
        while True:
            while len(order) < self.batch:
                order = np.concatenate([order, rng.permutation(len(self.x))])
            idx, order = order[:self.batch], order[self.batch:]
            yield self.x[idx], self.y[idx]


def import_reference(checkout: str):
    sys.modules.setdefault("torch", types.ModuleType("torch"))
    import jax

    from bench_rcig_vs_reference import _shim

    _shim(jax)
    sys.path.insert(0, os.path.abspath(checkout))
    import algorithms
    import flax
    import models

    class FrozenProtoHolder(algorithms.ProtoHolder):
        def init(self, *args, **kwargs):
            return flax.core.freeze(super().init(*args, **kwargs))

    algorithms.ProtoHolder = FrozenProtoHolder
    return algorithms, models


def main() -> None:
    checkout, split, start, out, settings = sys.argv[1:6]
    settings = json.loads(settings)
    algorithms, models = import_reference(checkout)
    import flax
    import jax
    import jax.numpy as jnp
    import ml_collections

    with np.load(split) as d:
        loader = ArrayLoader(d["x_train"], d["y_train"], settings["target_batch"], settings["num_classes"])
    with np.load(start) as s:
        num_classes = settings["num_classes"]
        coreset_images = jnp.asarray(s["x"], jnp.float32)
        coreset_labels = jax.nn.one_hot(s["labels"], num_classes) - 1 / num_classes  # init_proto's labels

    # main(): the config file, then what main sets from its arguments.
    loaded = json.loads(open(os.path.join(checkout, CONFIG)).read())
    loaded["direct_batch_sizes"] = tuple(loaded["direct_batch_sizes"])
    for name in ("proto_learning_rate", "max_steps", "pool_model_count", "n_inner_steps", "n_hinv_steps",
                 "l2_rate", "learn_labels"):
        loaded[name] = settings[name]
    alg_config = ml_collections.config_dict.ConfigDict(loaded)
    alg_config.l2 = alg_config.l2_rate * coreset_images.shape[0]
    alg_config.use_x64 = False
    alg_config.naive_loss = False
    alg_config.output_dir = None
    alg_config.model_depth = 3
    model = models.Conv(use_softplus=alg_config.softplus_temp != 0, beta=alg_config.softplus_temp,
                        num_classes=num_classes, width=settings["width"], depth=3,
                        normalization="batch" if alg_config.has_bn else "identity")
    key = jax.random.PRNGKey(settings["random_seed"])

    def init(*args, **kwargs):
        return flax.core.freeze(model.init(*args, **kwargs))

    t0 = time.time()
    inner_learning_rate, hvp_learning_rate = 0.00001, 0.00005  # main's tuning, as written there
    with contextlib.redirect_stdout(None):
        inner_result = 1
        while inner_result == 1:
            inner_result, _ = algorithms.run_rcig(coreset_images, coreset_labels, init, model.apply, loader,
                                                  alg_config, key, inner_learning_rate, hvp_learning_rate,
                                                  lr_tune=True)
            inner_learning_rate *= 1.2
        inner_learning_rate *= 0.7
        hvp_result = 1
        while hvp_result == 1:
            _, hvp_result = algorithms.run_rcig(coreset_images, coreset_labels, init, model.apply, loader,
                                                alg_config, key, inner_learning_rate, hvp_learning_rate,
                                                lr_tune=True)
            hvp_learning_rate *= 1.2
        hvp_learning_rate *= 0.7
    print(f"reference: tuned inner lr {inner_learning_rate:.4g}, hvp lr {hvp_learning_rate:.4g} "
          f"in {time.time() - t0:.0f} s", flush=True)

    t0 = time.time()
    with contextlib.redirect_stdout(None):
        state, _, _, inner_learning_rate, _ = algorithms.run_rcig(
            coreset_images, coreset_labels, init, model.apply, loader, alg_config, key, inner_learning_rate,
            hvp_learning_rate, start_iter=0)
    print(f"reference: {settings['max_steps']} steps in {time.time() - t0:.0f} s (inner lr now "
          f"{inner_learning_rate:.4g})", flush=True)
    np.savez(out, x=np.asarray(state.ema_average["x_proto"]), y=np.asarray(state.ema_average["y_proto"]))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()

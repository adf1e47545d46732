"""Writes ``rcig_reference.npz`` (float32) and ``rcig_reference_f64.npz``: RCIG's reference code (``yolky/RCIG`` at a9fb1fa, ``algorithms.py`` and
``models.py``) run on small fixed inputs, for ``tests/test_rcig.py``.

Runs the reference's own functions (read, not copied), imported from a checkout: its pool training
(``do_training_steps`` on the base network), its inner problem (``do_training_steps`` with
``do_krr``, the injected learning rate and the pool's optimizer state), the direct and outer
gradients (``get_gt_and_direct``), the Hessian-inverse-vector product (``get_h_inv_vp``), the
implicit gradient (``get_implicit_grad``) and one whole meta step (``do_meta_train_step``), on a
width-4 ``Conv`` (softplus 60) over 8x8 grey images, once in float32 (the reference's dtype) and once
with ``jax_enable_x64`` and float64 inputs and network (``Conv(dtype=float64)``), where the two
codes' agreement is not limited by float32 rounding. Not run by the tests or CI; rerun it to
regenerate the file, in an environment with the reference's dependencies (jax 0.4.30, flax,
optax, ml_collections, absl-py, einops; ``torch`` is imported by the reference but unused here):

    python tests/golden/make_rcig_reference.py RCIG_CHECKOUT float32
    python tests/golden/make_rcig_reference.py RCIG_CHECKOUT float64

Shims, for a jax newer than the reference's: ``jax.jit`` drops static argument names a function
does not take (the reference names ``train`` for functions without it; newer jax refuses that).
"""

import inspect
import sys
import types
from pathlib import Path

import jax
import numpy as np

WIDTH, CLASSES, SUPPORT, TARGETS, SIDE = 4, 10, 10, 32, 8
L2 = 5e-4 * SUPPORT
POOL_LR, INNER_LR, HVP_LR = 5e-5, 1e-3, 1e-2
POOL_STEPS, INNER_STEPS, HINV_STEPS = 3, 5, 5
SUB_ROWS, SUB_TARGETS, SUB_REPEATS = 4, 12, 2


def inputs(dtype=np.float32) -> dict[str, np.ndarray]:
    """Support, targets (centred one-hot labels) and the network's base parameters, from a fixed seed."""
    rng = np.random.default_rng(0)
    eye = np.eye(CLASSES, dtype=np.float32) - 1.0 / CLASSES
    out = {
        "xs": rng.normal(size=(SUPPORT, SIDE, SIDE, 1)).astype(np.float32),
        "ys": eye[np.arange(SUPPORT) % CLASSES],
        "xt": rng.normal(size=(TARGETS, SIDE, SIDE, 1)).astype(np.float32),
        "yt": eye[rng.integers(0, CLASSES, TARGETS)],
    }
    shapes = {"Conv_0/kernel": (3, 3, 1, WIDTH), "Conv_0/bias": (WIDTH,),
              "Conv_1/kernel": (3, 3, WIDTH, 2 * WIDTH), "Conv_1/bias": (2 * WIDTH,),
              "Conv_2/kernel": (3, 3, 2 * WIDTH, 4 * WIDTH), "Conv_2/bias": (4 * WIDTH,),
              "Dense_0/kernel": (4 * WIDTH, CLASSES), "Dense_0/bias": (CLASSES,)}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[:-1])) if name.endswith("kernel") else 10
        out[f"params/{name}"] = (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
    return {k: v.astype(dtype) for k, v in out.items()}


def nested(flat: dict[str, np.ndarray], prefix: str = "params/") -> dict:
    tree: dict = {}
    for name, value in flat.items():
        if name.startswith(prefix):
            module, leaf = name[len(prefix):].split("/")
            tree.setdefault(module, {})[leaf] = value
    return tree


def flat(tree, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for module, leaves in tree.items():
        if isinstance(leaves, dict):
            for leaf, value in leaves.items():
                out[f"{prefix}/{module}/{leaf}"] = np.asarray(value)
        else:
            out[f"{prefix}/{module}"] = np.asarray(leaves)
    return out


def _shim_jit() -> None:
    original = jax.jit

    def jit(fun=None, **kwargs):
        if fun is None:
            return lambda f: jit(f, **kwargs)
        names = kwargs.get("static_argnames")
        if names:
            taken = set(inspect.signature(fun).parameters)
            kwargs["static_argnames"] = tuple(n for n in ((names,) if isinstance(names, str) else names)
                                              if n in taken)
        return original(fun, **kwargs)

    jax.jit = jit


def main(checkout: Path, dtype: str) -> None:
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    sys.modules.setdefault("torch", types.ModuleType("torch"))
    _shim_jit()
    sys.path.insert(0, str(checkout))
    import algorithms
    import jax.numpy as jnp
    import ml_collections
    import models
    import optax

    data = inputs(np.dtype(dtype))
    xs, ys, xt, yt = (jnp.asarray(data[k]) for k in ("xs", "ys", "xt", "yt"))
    base = jax.tree.map(jnp.asarray, nested(data))
    config = ml_collections.FrozenConfigDict(dict(naive_loss=False, model_depth=3, pool_learning_rate=POOL_LR,
                                                  max_forward_batch_size=None, use_x64=False))
    net = models.Conv(use_softplus=True, beta=60.0, num_classes=CLASSES, width=WIDTH, depth=3,
                      normalization="identity", dtype=jnp.dtype(dtype))
    inner_opt = optax.chain(
        optax.masked(optax.adam(learning_rate=0.0001), {"base_params": False,
                                                        "tangent_params": algorithms.get_tree_mask(3, False, False)}),
        optax.masked(optax.adam(learning_rate=POOL_LR), {"base_params": True, "tangent_params": False}))
    model = algorithms.TrainStateWithBatchStats.create(
        apply_fn=algorithms.get_linear_forward(net.apply, has_bn=False),
        params={"base_params": base, "tangent_params": jax.tree.map(jnp.zeros_like, base)},
        tx=inner_opt, batch_stats=None, train_it=0)
    key = jax.random.PRNGKey(0)
    out = dict(data)

    # The pool's training of the base network (what rcig-pool's update does), POOL_STEPS steps.
    model, _ = algorithms.do_training_steps(model, {"images": xs, "labels": ys}, key, n_steps=POOL_STEPS,
                                            has_bn=False, use_base_params=True, aug=algorithms.identity,
                                            batch_size=None, max_batch_size=SUPPORT, train=True)
    out.update(flat(model.params["base_params"], "pooled"))

    # The inner problem at an injected learning rate, from the pool's optimizer state (count = age).
    inner, losses = algorithms.do_training_steps(model, {"images": xs, "labels": ys}, key, n_steps=INNER_STEPS,
                                                 l2=L2, has_bn=False, train=False, aug=algorithms.identity,
                                                 do_krr=True, batch_size=None, inject_lr=INNER_LR,
                                                 alg_config=config)
    out.update(flat(inner.params["tangent_params"], "theta"))
    out.update(flat(inner.params["base_params"], "inner_base"))  # moved by the pool optimizer's momentum
    out["inner_losses"] = np.asarray(losses[:INNER_STEPS])

    # The inner loss and its gradient at the inner solution.
    value, grads = jax.value_and_grad(algorithms.get_krr_loss_gd, has_aux=True)(
        inner.params, inner, xs, ys, None, None, has_bn=False, l2=L2, self_loss=True)
    out["inner_loss"] = np.asarray(value[0])
    out.update(flat(grads["tangent_params"], "inner_grad"))

    holder = algorithms.ProtoHolder(xs, ys, 0.0, SUPPORT, learn_label=True, use_flip=False)
    coreset_params = holder.init({"params": key})["params"]
    coreset_opt = optax.chain(
        optax.masked(optax.adabelief(learning_rate=3e-3), {"x_proto": True, "y_proto": True, "log_temp": False}),
        optax.masked(optax.adabelief(learning_rate=0.03), {"x_proto": False, "y_proto": False, "log_temp": True}))
    coreset = algorithms.CoresetTrainState.create(apply_fn=holder.apply, tx=coreset_opt, params=coreset_params,
                                                  train_it=0, ema_average=coreset_params,
                                                  ema_hidden=jax.tree.map(jnp.zeros_like, coreset_params))

    # The outer loss and its direct and model gradients; H^-1 g; the implicit gradient; one meta step.
    g_t, direct, _, loss, _ = algorithms.get_gt_and_direct(inner, coreset, xt, yt, has_bn=False, l2=L2,
                                                           do_krr=True, aug=algorithms.identity, aug_repeats=0,
                                                           aug_key=key, normal_repeats=1, batch_sizes=(None, None))
    out["outer_loss"] = np.asarray(loss)
    out.update(flat(g_t["tangent_params"], "g_t"))
    out.update(flat(direct, "direct"))
    v, residuals = algorithms.get_h_inv_vp(coreset, inner, g_t, n_steps=HINV_STEPS, l2=L2, has_bn=False,
                                           do_krr=True, lr=HVP_LR, alg_config=config)
    out.update(flat(v["tangent_params"], "h_inv_vp"))
    out["residuals"] = np.asarray(residuals[:HINV_STEPS])
    implicit = algorithms.get_implicit_grad(v, inner, coreset, xt, yt, has_bn=False, l2=L2, do_krr=True,
                                            aug=algorithms.identity, aug_repeats=0, aug_key=key, normal_repeats=1)
    out.update(flat(implicit, "implicit"))
    stepped, _ = algorithms.do_meta_train_step(inner, coreset, xt, yt, has_bn=False, l2=L2, n_hinv_steps=HINV_STEPS,
                                               do_krr=True, aug=algorithms.identity, aug_repeats=0, aug_key=key,
                                               lr=HVP_LR, normal_repeats=1, direct_batch_sizes=(None, None),
                                               alg_config=config)
    out.update(flat(stepped.params, "stepped"))
    out.update(flat(stepped.ema_average, "ema"))
    out.update(subsampled(algorithms, inner, coreset, model, xs, ys, xt, yt, key, config))
    name = "rcig_reference.npz" if dtype == "float32" else "rcig_reference_f64.npz"
    np.savez_compressed(Path(__file__).with_name(name), **out)


def subsampled(algorithms, inner, coreset, model, xs, ys, xt, yt, key, config) -> dict[str, np.ndarray]:
    """The reference's subsampling of large supports (its ``cifar100_50`` config): gradients through
    ``SUB_ROWS`` of the support's rows (and ``SUB_TARGETS`` of the targets' in the direct pass), the
    other rows' features precomputed without gradient, ``SUB_REPEATS`` passes averaged. Recorded
    with ``sub/`` names: the rows it drew from fixed keys, each piece on given rows, and the pieces
    and one meta step drawing their own rows."""
    import jax.numpy as jnp

    out = {}
    rows = jax.random.choice(jax.random.PRNGKey(1), SUPPORT, shape=[SUB_ROWS], replace=False)
    target_rows = jax.random.choice(jax.random.PRNGKey(2), TARGETS, shape=[SUB_TARGETS], replace=False)
    out["sub/rows"], out["sub/target_rows"] = np.asarray(rows), np.asarray(target_rows)
    (pre_s, pre_t) = algorithms.get_krr_loss(inner.params, coreset.params, coreset.apply_fn, xt, yt, inner.apply_fn,
                                             has_bn=False, l2=L2, aug=algorithms.identity, do_precompute=True)
    for prefix, pre in (("sub/inner", None), ("sub/inner_pre", pre_s)):  # the rest recomputed, or precomputed
        value, grads = jax.value_and_grad(algorithms.get_krr_loss_gd, has_aux=True)(
            inner.params, inner, xs, ys, None, None, has_bn=False, l2=L2, self_loss=True, grad_indices=rows,
            pre_s=pre)
        out[f"{prefix}_loss"] = np.asarray(value[0])
        out.update(flat(grads["tangent_params"], f"{prefix}_grad"))
    (loss, _), (g_t, direct) = jax.value_and_grad(algorithms.get_krr_loss, argnums=(0, 1), has_aux=True)(
        inner.params, coreset.params, coreset.apply_fn, xt, yt, inner.apply_fn, has_bn=False, l2=L2,
        aug=algorithms.identity, grad_indices1=rows, grad_indices2=target_rows, pre_s=pre_s, pre_t=pre_t)
    out["sub/outer_loss"] = np.asarray(loss)
    out.update(flat(g_t["tangent_params"], "sub/g_t"))
    out.update(flat(direct, "sub/direct"))
    hvp = algorithms.get_training_loss_hvp_krr(inner.params, xs, ys, inner, g_t, l2=L2, has_bn=False,
                                               grad_indices=rows, pre_s=pre_s, alg_config=config)
    out.update(flat(hvp["tangent_params"], "sub/hvp"))
    # Pieces that draw their own rows: the inner steps (rows from the step's key, the rest
    # recomputed), H^-1 g (rows from PRNGKey(0): do_meta_train_step passes it no key), the direct
    # and implicit gradients over SUB_REPEATS draws, and a whole meta step.
    trained, losses = algorithms.do_training_steps(model, {"images": xs, "labels": ys}, key, n_steps=INNER_STEPS,
                                                   l2=L2, has_bn=False, train=False, aug=algorithms.identity,
                                                   do_krr=True, batch_size=SUB_ROWS, inject_lr=INNER_LR,
                                                   alg_config=config)
    out.update(flat(trained.params["tangent_params"], "sub/theta"))
    out["sub/inner_losses"] = np.asarray(losses[:INNER_STEPS])
    v, residuals = algorithms.get_h_inv_vp(coreset, inner, g_t, n_steps=HINV_STEPS, l2=L2, has_bn=False,
                                           do_krr=True, lr=HVP_LR, pre_s=pre_s, batch_size=SUB_ROWS,
                                           alg_config=config)
    out.update(flat(v["tangent_params"], "sub/h_inv_vp"))
    out["sub/residuals"] = np.asarray(residuals[:HINV_STEPS])
    g_t, direct, next_key, loss, _ = algorithms.get_gt_and_direct(
        inner, coreset, xt, yt, has_bn=False, l2=L2, do_krr=True, aug=algorithms.identity, aug_repeats=0,
        aug_key=key, normal_repeats=SUB_REPEATS, batch_sizes=(SUB_ROWS, SUB_TARGETS), pre_s=pre_s, pre_t=pre_t)
    out.update(flat(g_t["tangent_params"], "sub/g_t_repeated"))
    out.update(flat(direct, "sub/direct_repeated"))
    implicit = algorithms.get_implicit_grad(v, inner, coreset, xt, yt, has_bn=False, l2=L2, do_krr=True,
                                            aug=algorithms.identity, aug_repeats=0, aug_key=next_key,
                                            normal_repeats=SUB_REPEATS, batch_size=SUB_ROWS, pre_s=pre_s)
    out.update(flat(implicit, "sub/implicit_repeated"))
    stepped, _ = algorithms.do_meta_train_step(
        inner, coreset, xt, yt, has_bn=False, l2=L2, n_hinv_steps=HINV_STEPS, do_krr=True, aug=algorithms.identity,
        aug_repeats=0, aug_key=key, lr=HVP_LR, normal_repeats=SUB_REPEATS, direct_batch_sizes=(SUB_ROWS, SUB_TARGETS),
        implicit_batch_size=SUB_ROWS, hinv_batch_size=SUB_ROWS, do_precompute=True, alg_config=config)
    out.update(flat(stepped.params, "sub/stepped"))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("float32", "float64"):
        sys.exit("usage: python tests/golden/make_rcig_reference.py RCIG_CHECKOUT float32|float64")
    main(Path(sys.argv[1]), sys.argv[2])

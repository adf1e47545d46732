"""FRePo's pooled conjugate kernel (Zhou, Nezhadarya & Ba 2022): ``K = f(x1) f(x2)^T`` with ``f``
the penultimate features of one network of a pool of P finite networks that train on the support
while it is distilled (``kernel=frepo-pool``).

The pool is a ``Learning`` (``distillbench.components.kernels``): the objective carries its state
and calls ``update`` once per distillation step, in the reference's order (``frepo.py``,
``proto_train_and_evaluate``): the current network is re-initialised when its age (the
reference's ``nn_state.step``) exceeds ``max_updates``, else it takes one Adam step of the
reference's loss (mean over the batch of ``sum_c 0.5 (logit_c - y_c)^2``) on a batch of the
support, with batch statistics updated; then the next current network is drawn uniformly.
Initial ages are staggered, ``(T // P) * i``, so the networks reset in turn.

The networks are the ``arch`` architecture's finite network (``Architecture.network``). They
train in float32 whatever the support's dtype (one state, one compiled update); the kernel
computes in the dtype of its images (parameters cast), with running batch statistics
(``train=False``), and matmuls at ``highest`` precision. The support reaches the update without
its gradient: labels are used as given (learned ones too), nothing flows back into them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distillbench import devices
from distillbench.components.architectures import Architecture, complete
from distillbench.components.kernels import Kernel, Learning, Network
from distillbench_builtin.kernels.blocking import local_devices, map_blocks
from distillbench_builtin.kernels.random_features import example_bytes

_PRECISION = "highest"


class PoolState(NamedTuple):
    """The pool; every leaf but ``current`` and ``classes`` stacked over the P networks."""

    params: Any
    batch_stats: Any  # {} for networks without batch norm
    opt: Any  # optax.adam states
    age: Any  # (P,) int32: online updates since the network was (re-)initialised
    current: Any  # () int32: the network whose features the kernel uses now
    classes: Any  # (C,) zeros: its shape is the readout's size, static under jit (bind builds the net)


def _dense_floating(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def build_frepo_pool(
    arch: Architecture,
    width: int = 32,
    normalization: str = "batch",
    num_networks: int = 10,
    max_updates: int = 100,
    lr: float = 3e-4,
    batch: int = 1000,
) -> Kernel:
    """FRePo's pool of ``num_networks`` ``arch`` networks, each reset after ``max_updates`` online
    Adam(``lr``) steps on ``batch`` support examples; see the module docstring."""
    arch = complete(arch)
    arch.network(1, width, normalization, jnp.float32)  # an unknown normalization: one line, now
    tx = optax.adam(lr)
    nets = _networks(arch, width, normalization, tx, batch)
    init, update = _init_update(nets, arch, num_networks, max_updates)
    bind, fit = _bind_fit(nets, arch)

    @jax.jit
    def fresh_features(x, key):
        """The kernel seen without learning: one freshly initialised network (readout of 1: the
        features do not depend on its size)."""
        x = _dense_floating(x)
        params, stats, _ = nets.fresh(key, x.shape[1:], 1)
        return nets.features(params, stats, 1, x)

    return _bound(arch, fresh_features, random=True)._replace(
        learning=Learning(init=init, bind=bind, update=update, fit=fit,
                          network=_current_network(arch, width, normalization, tx)))


class _Networks(NamedTuple):
    """What one network of the pool does: ``fresh(key, image_shape, C)`` -> (params, batch_stats,
    adam state), ``features(params, stats, C, x)``, ``train_step(params, stats, opt, x, y)``,
    ``sample(key, x, y)`` (the online batch)."""

    fresh: Any
    features: Any
    train_step: Any
    sample: Any


def _networks(arch: Architecture, width: int, normalization: str, tx, batch: int) -> _Networks:
    def net(num_classes: int, dtype):
        return arch.network(num_classes, width, normalization, dtype)

    def fresh(key, image_shape, num_classes: int):
        """One network as initialised: (params, batch_stats, adam state), float32."""
        variables = net(num_classes, jnp.float32).init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return params, variables.get("batch_stats", {}), tx.init(params)

    def features(params, stats, num_classes: int, x):
        """Penultimate features of one network, in ``x``'s dtype, chunked (bounded memory)."""
        x = _dense_floating(x)
        arch.check_image_shape(x.shape)
        module = net(num_classes, x.dtype)
        cast = jax.tree.map(lambda a: a.astype(x.dtype), _variables(params, stats))

        def chunk_features(xc, v):
            return module.apply(v, xc, train=False)[1]

        chunk = devices.rf_chunk_size(devices.current(), example_bytes(arch, width, x.shape[1:], x.dtype))
        with jax.default_matmul_precision(_PRECISION):
            return map_blocks(chunk_features, x, cast, chunk, local_devices())

    def loss(params, stats, x, y):
        """The reference's mean_squared_loss, averaged over the batch; and the new batch stats."""
        (logits, _), new = net(y.shape[-1], jnp.float32).apply(_variables(params, stats), x, train=True,
                                                              mutable=["batch_stats"])
        return jnp.mean(jnp.sum(0.5 * (logits - y) ** 2, axis=-1)), new.get("batch_stats", {})

    def train_step(params, stats, opt, x, y):
        with jax.default_matmul_precision(_PRECISION):
            grads, stats = jax.grad(loss, has_aux=True)(params, stats, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    def sample(key, x, y):
        """The reference's get_sample_proto: the whole support when it holds fewer than ``batch``."""
        m = x.shape[0]
        if m < batch:
            return x, y
        idx = jax.random.choice(key, m, (batch,), replace=False)
        return x[idx], y[idx]

    return _Networks(fresh, features, train_step, sample)


def _variables(params, stats):
    return {"params": params, "batch_stats": stats} if jax.tree.leaves(stats) else {"params": params}


def _bound(arch: Architecture, feature_fn, random: bool) -> Kernel:
    # Not jitted here: bind makes a new closure every step (a jit of it would compile every
    # step); the features are jitted functions of the state.
    def kernel_fn(x1, x2, key=None):
        return jnp.matmul(feature_fn(x1, key), feature_fn(x2, key).T, precision=_PRECISION)

    return Kernel(kernel_fn=kernel_fn, feature_fn=feature_fn, random=random, arch=arch.name)


def _support(x, y):
    """The support as the networks train on it: float32 constants."""
    x = jax.lax.stop_gradient(_dense_floating(x)).astype(jnp.float32)
    return x, jax.lax.stop_gradient(jnp.asarray(y)).astype(jnp.float32)


def _init_update(nets: _Networks, arch: Architecture, num_networks: int, max_updates: int):
    """The pool's ``init`` (staggered ages) and ``update`` (the reference's order), jitted."""

    @jax.jit
    def init(key, x, y) -> PoolState:
        arch.check_image_shape(x.shape)
        k_nets, k_current = jax.random.split(key)
        num_classes = y.shape[-1]
        params, stats, opt = jax.vmap(lambda k: nets.fresh(k, x.shape[1:], num_classes))(
            jax.random.split(k_nets, num_networks))
        return PoolState(params=params, batch_stats=stats, opt=opt,
                         age=(max_updates // num_networks) * jnp.arange(num_networks, dtype=jnp.int32),
                         current=jax.random.randint(k_current, (), 0, num_networks, dtype=jnp.int32),
                         classes=jnp.zeros((num_classes,), jnp.int32))

    @jax.jit
    def update(state: PoolState, x, y, key) -> PoolState:
        x, y = _support(x, y)
        k_reset, k_batch, k_next = jax.random.split(key, 3)
        i = state.current
        old = state.age[i] > max_updates
        one = jax.tree.map(lambda a: a[i], (state.params, state.batch_stats, state.opt))
        # Both computed, one kept: XLA:CPU runs a network's gradient inside a lax.cond ~40x slower
        # than outside one (21.4 s against 0.50 s for a width-64 frepo-conv step on 100 images); a
        # fresh network costs its random initialisation only.
        reset = nets.fresh(k_reset, x.shape[1:], y.shape[-1])
        trained = nets.train_step(*one, *nets.sample(k_batch, x, y))
        new = jax.tree.map(lambda a, b: jnp.where(old, a, b), reset, trained)
        # Written back by a select over the pool, not ``.at[i].set``: XLA:CPU copied the donated
        # Adam moments before updating one slot in place (two pool-sized copies in the step's
        # temporaries; 446 against 370 MiB for width-128 frepo-conv), the select writes in place.
        slot = jnp.arange(num_networks) == i
        params, stats, opt = jax.tree.map(
            lambda a, n: jnp.where(slot.reshape((-1,) + (1,) * n.ndim), n[None], a),
            (state.params, state.batch_stats, state.opt), new)
        return state._replace(params=params, batch_stats=stats, opt=opt,
                              age=state.age.at[i].set(jnp.where(old, 0, state.age[i] + 1)),
                              current=jax.random.randint(k_next, (), 0, num_networks, dtype=jnp.int32))

    return init, update


def _current_network(arch: Architecture, width: int, normalization: str, tx):
    """``Learning.network``: the current network (running batch statistics), its age and Adam state."""

    def network(state: PoolState) -> Network:
        module = arch.network(state.classes.shape[0], width, normalization, jnp.float32)

        def apply(variables, x):
            return module.apply(variables, x, train=False)

        params, stats, opt = jax.tree.map(lambda a: a[state.current], (state.params, state.batch_stats, state.opt))
        return Network(apply, _variables(params, stats), state.age[state.current], tx, opt)

    return network


def _bind_fit(nets: _Networks, arch: Architecture):
    """The pool's ``bind`` (the current network's kernel) and ``fit`` (how FRePo evaluates)."""

    @jax.jit
    def pool_features(state: PoolState, x):
        one = jax.tree.map(lambda a: a[state.current], (state.params, state.batch_stats))
        return nets.features(*one, state.classes.shape[0], x)

    def bind(state: PoolState) -> Kernel:
        """The networks' kernel as they are now: ``state`` fixes it, the key is not used (random=False:
        every draw is the same kernel)."""
        return _bound(arch, lambda x, key=None: pool_features(state, x), random=False)

    @jax.jit
    def _fit(key, x, y, updates):
        x, y = _support(x, y)
        k_init, k_loop = jax.random.split(key)

        def step(i, net):
            return nets.train_step(*net, *nets.sample(jax.random.fold_in(k_loop, i), x, y))

        net = jax.lax.fori_loop(0, updates, step, nets.fresh(k_init, x.shape[1:], y.shape[-1]))
        params, stats, opt = jax.tree.map(lambda a: a[None], net)
        return PoolState(params=params, batch_stats=stats, opt=opt, age=updates[None], current=jnp.int32(0),
                         classes=jnp.zeros((y.shape[-1],), jnp.int32))

    def fit(key, x, y, updates) -> PoolState:
        """A pool of one fresh network trained ``updates`` times on ``(x, y)``, never reset: how FRePo
        evaluates a finished set (``eval_on_proto_krr`` after ``train_on_proto``; here with this
        kernel's batches and normalization, without augmentation)."""
        return _fit(key, x, y, jnp.asarray(updates, jnp.int32))

    return bind, fit

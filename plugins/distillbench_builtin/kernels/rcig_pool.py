"""RCIG's model pool (Loo, Hasani, Lechner & Rus, ICML 2023; ``yolky/RCIG``, ``algorithms.py``) as a
kernel whose networks learn (``kernel=rcig-pool``): ``K = f(x1) f(x2)^T`` with ``f`` the penultimate
features of the pool's current network, the "base" network that RCIG linearises.

The pool is a ``Learning`` (``distillbench.components.kernels``) in the reference's order
(``run_rcig``): each distillation step uses the current network; then ``update`` trains it for a
uniformly drawn ``1 .. max_steps - 1`` Adam(``lr``) steps (``randint(1, n_max_steps_pool)``) of the
reference's ``get_training_loss_l2`` on the whole support (``sum 0.5 (logit - y)^2 / (n C)``, its
base parameters only), re-initialises it once its age (the reference's ``train_it``, its optimizer
steps since initialisation) reaches ``max_updates``, and draws the next current network uniformly.
All networks start at age 0 (no staggering, unlike FRePo's pool).

The networks are ``arch``'s finite network without normalization (the reference's ``depth_3``
configs: ``has_bn`` false) with the smooth ReLU ``softplus(beta x) / beta`` at
``softplus_temp`` = beta (the reference's 60; 0: ReLU); ``frepo-conv`` is the reference's ``Conv``.
``Learning.network`` hands the current network to ``objective=rcig``, which linearises it. The
networks train and compute in float32 (the reference's dtype), matmuls at ``highest`` precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distillbench.components.architectures import Architecture, complete
from distillbench.components.kernels import Kernel, Learning, Network
from distillbench_builtin.kernels.learned_pool import _bound, _dense_floating, _support

_PRECISION = "highest"


class RcigPoolState(NamedTuple):
    """The pool; ``params``, ``opt`` and ``age`` stacked over the P networks."""

    params: Any
    opt: Any  # optax.adam states of the base parameters
    age: Any  # (P,) int32: optimizer steps since the network was (re-)initialised
    current: Any  # () int32: the network the next distillation step uses
    classes: Any  # (C,) zeros: the readout's size, static under jit


def network_module(arch: Architecture, width: int, num_classes: int, softplus_temp: float):
    """``arch``'s network as the pool has it: no normalization, float32, softplus at ``softplus_temp``."""
    if softplus_temp:
        try:
            return arch.network(num_classes, width, "none", jnp.float32, softplus=softplus_temp)
        except TypeError:
            raise ValueError(f"{arch.name}'s network has no softplus activation; use kernel.softplus_temp=0 "
                             f"(ReLU) or kernel.arch=frepo-conv (RCIG's Conv)") from None
    return arch.network(num_classes, width, "none", jnp.float32)


def pool_loss(module, params, x, y):
    """The reference's ``get_training_loss_l2`` of the base network: ``sum 0.5 (out - y)^2 / (n C)``."""
    out, _ = module.apply({"params": params}, x, train=True)
    return jnp.sum(0.5 * (out - y) ** 2) / (y.shape[0] * y.shape[1])


def pool_train(module, tx, params, opt, x, y, steps):
    """``steps`` optimizer steps of the base network on ``pool_loss`` (the reference's pool training)."""

    def one(_, carry):
        p, o = carry
        with jax.default_matmul_precision(_PRECISION):
            grads = jax.grad(lambda q: pool_loss(module, q, x, y))(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o

    return jax.lax.fori_loop(0, steps, one, (params, opt))


def _views(arch: Architecture, module_for, tx):
    """The pool's ``Learning.network`` (the current network, its age and Adam state) and ``bind``
    (its conjugate kernel)."""

    def network(state: RcigPoolState) -> Network:
        """The current network, its age and its Adam state (``Learning.network``)."""
        module = module_for(state.classes.shape[0])

        def apply(variables, x):
            return module.apply(variables, x, train=False)

        params, opt = jax.tree.map(lambda a: a[state.current], (state.params, state.opt))
        return Network(apply, {"params": params}, state.age[state.current], tx, opt)

    @jax.jit
    def pool_features(state: RcigPoolState, x):
        """The current network's features, computed in float32 and returned in ``x``'s dtype."""
        x = _dense_floating(x)
        arch.check_image_shape(x.shape)
        apply, variables = network(state)[:2]
        with jax.default_matmul_precision(_PRECISION):
            return apply(variables, x.astype(jnp.float32))[1].astype(x.dtype)

    def bind(state: RcigPoolState) -> Kernel:
        """The current network's conjugate kernel (``random=False``: the key is not used)."""
        return _bound(arch, lambda x, key=None: pool_features(state, x), random=False)

    return network, bind


def build_rcig_pool(arch: Architecture, width: int = 32, num_networks: int = 30, max_updates: int = 100,
                    max_steps: int = 16, lr: float = 5e-5, softplus_temp: float = 60.0) -> Kernel:
    """RCIG's pool of ``num_networks`` ``arch`` networks; see the module docstring."""
    arch = complete(arch)
    network_module(arch, width, 1, softplus_temp)  # an architecture without softplus: one line, now
    tx = optax.adam(lr)

    def module_for(num_classes: int):
        return network_module(arch, width, num_classes, softplus_temp)

    def fresh(key, image_shape, num_classes: int):
        params = module_for(num_classes).init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)["params"]
        return params, tx.init(params)

    @jax.jit
    def init(key, x, y) -> RcigPoolState:
        arch.check_image_shape(x.shape)
        k_nets, k_current = jax.random.split(key)
        params, opt = jax.vmap(lambda k: fresh(k, x.shape[1:], y.shape[-1]))(jax.random.split(k_nets, num_networks))
        return RcigPoolState(params=params, opt=opt, age=jnp.zeros((num_networks,), jnp.int32),
                             current=jax.random.randint(k_current, (), 0, num_networks, dtype=jnp.int32),
                             classes=jnp.zeros((y.shape[-1],), jnp.int32))

    @jax.jit
    def update(state: RcigPoolState, x, y, key) -> RcigPoolState:
        x, y = _support(x, y)
        k_steps, k_reset, k_next = jax.random.split(key, 3)
        i = state.current
        steps = jax.random.randint(k_steps, (), 1, max(max_steps, 2), dtype=jnp.int32)
        params, opt = pool_train(module_for(y.shape[-1]), tx, *jax.tree.map(lambda a: a[i], (state.params, state.opt)),
                                 x, y, steps)
        age = state.age[i] + steps
        old = age >= max_updates
        reset = fresh(k_reset, x.shape[1:], y.shape[-1])  # both computed, one kept (see learned_pool)
        params, opt = jax.tree.map(lambda a, b: jnp.where(old, a, b), reset, (params, opt))
        slot = jnp.arange(num_networks) == i
        params, opt = jax.tree.map(lambda a, n: jnp.where(slot.reshape((-1,) + (1,) * n.ndim), n[None], a),
                                   (state.params, state.opt), (params, opt))
        return state._replace(params=params, opt=opt, age=state.age.at[i].set(jnp.where(old, 0, age)),
                              current=jax.random.randint(k_next, (), 0, num_networks, dtype=jnp.int32))

    network, bind = _views(arch, module_for, tx)

    @jax.jit
    def fresh_features(x, key):
        x = _dense_floating(x)
        params, _ = fresh(key, x.shape[1:], 1)
        with jax.default_matmul_precision(_PRECISION):
            return module_for(1).apply({"params": params}, x.astype(jnp.float32), train=False)[1].astype(x.dtype)

    return _bound(arch, fresh_features, random=True)._replace(
        learning=Learning(init=init, bind=bind, update=update, network=network))

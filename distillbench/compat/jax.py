"""JAX names that moved between the supported releases (jax 0.5.3 to 0.10+)."""

from __future__ import annotations

import jax


def disable_x64():
    """A context manager running its body with 64-bit types off (``jax.enable_x64(False)`` on
    jax 0.8+, ``jax.experimental.disable_x64()`` before; the latter is gone in 0.10)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(False)
    from jax.experimental import disable_x64 as old

    return old()


def shard_map(fn, *, mesh, in_specs, out_specs):
    """``shard_map`` without replication checks: ``jax.shard_map(check_vma=False)`` where it
    exists (jax 0.7+), else ``jax.experimental.shard_map.shard_map(check_rep=False)``."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as old

    return old(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)

"""Jitted float64 convolutions must not crash the process (SPEC section 8: newer jaxlib builds
segfaulted on this CPU; jax 0.5.3 is pinned for it). A crash kills the interpreter, so the
computation runs in a subprocess and we check its exit status."""

import subprocess
import sys

SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from distillbench_builtin.kernels.exact import build_ntk

targets = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1), jnp.float64)
support = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1), jnp.float64)
for block_size in (None, 2):  # direct path, and blocked lax.map + checkpoint path
    k = build_ntk(arch="convnet3", w_std=2**0.5, b_std=0.1, block_size=block_size)

    @jax.jit
    def loss(s):
        k_ts = k.kernel_fn(targets, s, None)
        k_ss = k.kernel_fn(s, s, None)
        return jnp.sum(k_ts @ jnp.linalg.solve(k_ss + 1e-3 * jnp.eye(3), jnp.ones((3,))))

    value, grad = jax.value_and_grad(loss)(support)
    assert value.dtype == jnp.float64 and grad.dtype == jnp.float64
    assert grad.shape == support.shape
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
print("ok")
"""


def test_jitted_float64_convnet3_ntk_and_gradient_do_not_crash():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"
    assert out.stdout.strip().endswith("ok")

"""Kernel blocks and random-feature batches are split across all local devices (shard_map over a
1-D mesh) and give the same results as on one device. Two devices are forced on the CPU with
XLA's host device count in a subprocess; this process (one device) computes the reference."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

SCRIPT = r"""
import sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, {tests!r})
from test_multidevice import compute
assert len(jax.local_devices()) == 2, jax.local_devices()
out, jaxprs = compute()
assert all("shard_map" in j for j in jaxprs), "the work was not split across the devices"
np.savez({path!r}, **out)
print("ok")
"""


def compute():
    """Exact NTK (blocked: block_size=2) values and support gradients, and random features
    (chunked: batch_size=3) with gradients, in float64. Returns (arrays, jaxprs as text)."""
    from distillbench.registry import load_registry
    from distillbench_builtin.kernels.exact import build_ntk
    from distillbench_builtin.kernels.random_features import build_rf_nngp

    convnet3 = load_registry().architecture("convnet3")  # builders take the Architecture value

    x1 = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1), jnp.float64)
    ntk = build_ntk(arch=convnet3, block_size=2).kernel_fn
    rf = build_rf_nngp(arch=convnet3, num_networks=2, width=8, batch_size=3).feature_fn
    key = jax.random.PRNGKey(2)

    def loss(s):
        return jnp.sum(jnp.sin(ntk(x1, s, None))) + jnp.sum(ntk(s, s, None) ** 2)

    out = {
        "k_ts": ntk(x1, x2, None),
        "k_ss": ntk(x2, x2, None),
        "grad": jax.jit(jax.grad(loss))(x2),
        "features": rf(x1, key),
        "features_grad": jax.jit(jax.grad(lambda x: jnp.sum(rf(x, key) ** 2)))(x1),
    }
    jaxprs = [str(jax.make_jaxpr(lambda a, b: ntk(a, b, None))(x1, x2)), str(jax.make_jaxpr(rf)(x1, key))]
    return {k: np.asarray(v) for k, v in out.items()}, jaxprs


@pytest.mark.slow
def test_two_devices_give_the_one_device_results(tmp_path):
    path = tmp_path / "two_devices.npz"
    tests = os.path.dirname(os.path.abspath(__file__))
    # the suite's XLA flags (conftest.py) plus two host devices: both processes compile alike
    flags = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count=2'.strip()
    env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests, path=str(path))],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(jax.local_devices()) == 1
    ref, jaxprs = compute()
    assert not any("shard_map" in j for j in jaxprs)
    got = np.load(path)
    for name, value in ref.items():
        assert np.abs(value).max() > 0, name
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-15, err_msg=name)

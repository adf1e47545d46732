"""float64 convolutions (SPEC section 8): jitted float64 ``lax.conv`` crashed the process
(SIGSEGV) with jaxlib 0.8-0.10 on a 2-core AMD Zen 4 CPU with AVX-512 (0.5.3 and 0.7.2 never did;
on a Zen 3 without AVX-512, 0.10.2 ran every path below 3 times out of 3 without a crash).

So no built-in float64 path convolves: the exact kernels use shifted slices, the random-feature
trunks use a patch matmul for float64. The jaxpr test checks that structurally on any machine;
the subprocess tests run each float64 path, values and gradients, jitted, and check the exit
status, so a crash on any CI machine fails the suite instead of killing it."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

PATHS = {
    # the fast exact NTK, one block and blocked (lax.map + checkpoint)
    "fast": r"""
from distillbench_builtin.kernels.exact import build_ntk
for block_size in (None, 2):
    k = build_ntk(arch="convnet3", block_size=block_size).kernel_fn
    run(lambda s: jnp.sum(k(targets, s, None) @ jnp.linalg.solve(k(s, s, None) + 1e-3 * jnp.eye(3), jnp.ones((3,)))))
""",
    # random-feature trunks with library-sized convolutions (8 channels), gradient w.r.t. the images
    "rf": r"""
from distillbench_builtin.kernels.random_features import build_rf_nngp
f = build_rf_nngp(arch="convnet3", num_networks=2, width=8, batch_size=2).feature_fn
run(lambda s: jnp.sum(f(s, jax.random.PRNGKey(2)) ** 2))
""",
    # the neural-tangents reference (its own lax.conv: the library's code, not routed around)
    "neural-tangents": r"""
from distillbench_builtin.kernels.exact import build_ntk
k = build_ntk(arch="convnet3", implementation="neural-tangents", block_size=2).kernel_fn
run(lambda s: jnp.sum(k(targets, s, None)))
""",
}

PRELUDE = r"""
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
targets = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1), jnp.float64)
support = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1), jnp.float64)

def run(loss):
    value, grad = jax.jit(jax.value_and_grad(loss))(support)
    assert value.dtype == jnp.float64 and grad.dtype == jnp.float64
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
"""


@pytest.mark.parametrize("path", sorted(PATHS))
def test_jitted_float64_paths_do_not_crash(path):
    out = subprocess.run([sys.executable, "-c", PRELUDE + PATHS[path] + "\nprint('ok')\n"],
                         capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"
    assert out.stdout.strip().endswith("ok")


def _float64_convs(fn, *args) -> list[str]:
    text = str(jax.make_jaxpr(fn)(*args))
    lines = text.splitlines()
    return [line.strip() for line in lines if "= conv_general_dilated[" in line and "f64[" in line]


def test_builtin_float64_kernels_do_not_convolve():
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk
    from distillbench_builtin.kernels.random_features import build_rf_nngp

    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1), jnp.float64)
    key = jax.random.PRNGKey(1)
    for arch in ("convnet3", "convnet"):
        for build in (build_nngp, build_ntk):
            k = build(arch=arch).kernel_fn
            assert not _float64_convs(jax.grad(lambda s: jnp.sum(k(x, s, None))), x), (arch, build)
        f = build_rf_nngp(arch=arch, num_networks=2, width=8).feature_fn
        assert not _float64_convs(jax.grad(lambda s: jnp.sum(f(s, key) ** 2)), x), arch
    # the check itself sees a float64 convolution when there is one
    w = jnp.ones((3, 3, 1, 2), jnp.float64)
    assert _float64_convs(lambda a: jax.lax.conv_general_dilated(a, w, (1, 1), "SAME",
                                                                dimension_numbers=("NHWC", "HWIO", "NHWC")), x)

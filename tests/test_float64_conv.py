"""float64 convolutions (SPEC section 8, issue 27): jitted float64 ``lax.conv`` crashed the process
(SIGSEGV) in XLA:CPU's own code with jaxlib 0.8-0.10 on AMD Zen 4 CPUs with AVX-512 (0.5.3 and
0.7.2 never did; other Zen 4 machines and a Zen 3 ran the same programs without a crash).

distillbench routes every float64 convolution, whatever its source, into slices and dot products
(``distillbench.compat.float64_conv``) at the primitive's CPU lowering
(``distillbench.compat.conv_lowering``). What guards it on any CPU:
- the compiled modules (value and support gradient) of every float64 path hold no float64
  convolution: the built-in kernels, ``implementation=neural-tangents``, the docs' third-party
  architecture under ntk/nngp/rf-nngp, a bare ``lax.conv`` (the check sees one without the rule);
- the routed convolution equals XLA's over dimension numbers, strides, padding, dilations,
  feature and batch groups, values and gradients;
- subprocesses run the float64 paths, at the shapes that crashed, and check the exit status, so a
  crash on a CI machine fails the suite instead of killing it.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from helpers import architecture, docs_architecture_site

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

PRELUDE = r"""
import jax, jax.numpy as jnp, numpy as np
from distillbench.registry import load_registry
from distillbench.runner.pipeline import enable_float64
enable_float64()
architecture = load_registry().architecture  # what a run's registry hands the kernel builders
targets = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1), jnp.float64)
support = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1), jnp.float64)

def run(loss, x=None):
    value, grad = jax.jit(jax.value_and_grad(loss))(support if x is None else x)
    assert value.dtype == jnp.float64 and grad.dtype == jnp.float64
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
"""

PATHS = {
    # the fast exact NTK, one block and blocked (lax.map + checkpoint)
    "fast": r"""
from distillbench_builtin.kernels.exact import build_ntk
for block_size in (None, 2):
    k = build_ntk(arch=architecture("convnet3"), block_size=block_size).kernel_fn
    run(lambda s: jnp.sum(k(targets, s, None) @ jnp.linalg.solve(k(s, s, None) + 1e-3 * jnp.eye(3), jnp.ones((3,)))))
""",
    # random-feature trunks with library-sized convolutions (8 channels), gradient w.r.t. the images
    "rf": r"""
from distillbench_builtin.kernels.random_features import build_rf_nngp
f = build_rf_nngp(arch=architecture("convnet3"), num_networks=2, width=8, batch_size=2).feature_fn
run(lambda s: jnp.sum(f(s, jax.random.PRNGKey(2)) ** 2))
""",
    # the neural-tangents reference: its own lax.conv, routed at the lowering
    "neural-tangents": r"""
from distillbench_builtin.kernels.exact import build_ntk
k = build_ntk(arch=architecture("convnet3"), implementation="neural-tangents", block_size=2).kernel_fn
run(lambda s: jnp.sum(k(targets, s, None)))
""",
    # the shapes of the minimal crash: (50, 64, 64, 1) NHWC, 3x3 kernel, SAME, value and gradients
    "bare lax.conv at the crash shape": r"""
x = jax.random.normal(jax.random.PRNGKey(3), (50, 64, 64, 1), jnp.float64)
w = jax.random.normal(jax.random.PRNGKey(4), (3, 3, 1, 8), jnp.float64)
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
run(lambda a: jnp.sum(jnp.tanh(conv(a, w))), x)
gw = jax.jit(jax.grad(lambda w: jnp.sum(conv(x, w) ** 2)))(w)
assert np.all(np.isfinite(gw))
""",
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.slow
def test_jitted_float64_paths_do_not_crash(path):
    out = subprocess.run([sys.executable, "-c", PRELUDE + PATHS[path] + "\nprint('ok')\n"],
                         capture_output=True, text=True, timeout=900, env=ENV)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"
    assert out.stdout.strip().endswith("ok")


def test_docs_architecture_float64_paths_do_not_crash(tmp_path):
    """The docs' third-party convnet2 (stax and flax convolutions) under ntk, nngp and rf-nngp."""
    code = PRELUDE + r"""
from distillbench.registry import load_registry
from distillbench_builtin.kernels.exact import build_nngp, build_ntk
from distillbench_builtin.kernels.random_features import build_rf_nngp
x = jax.random.normal(jax.random.PRNGKey(3), (50, 64, 64, 1), jnp.float64)
for build in (build_ntk, build_nngp):
    k = build(arch=architecture("convnet2")).kernel_fn
    run(lambda s: jnp.sum(k(targets, s, None)))
f = build_rf_nngp(arch=architecture("convnet2"), num_networks=2, width=8).feature_fn
run(lambda s: jnp.sum(f(s, jax.random.PRNGKey(2)) ** 2), x)
print('ok')
"""
    site = docs_architecture_site(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                         env=dict(ENV, PYTHONPATH=str(site)))
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"


# -- structure: what the compiled modules contain --------------------------------------------


def _compiled_float64_convs(fn, *args) -> list[str]:
    """The float64 convolutions in ``fn``'s compiled CPU module (value and gradient lowered as given)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return [line.strip() for line in text.splitlines()
            if " convolution(" in line and ("f64[" in line or "c128[" in line)]


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


X = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1), jnp.float64)
KEY = jax.random.PRNGKey(1)


def _jaxpr_float64_convs(fn, *args) -> list[str]:
    lines = str(jax.make_jaxpr(fn)(*args)).splitlines()
    return [line.strip() for line in lines if "= conv_general_dilated[" in line and "f64[" in line]


@pytest.mark.parametrize("arch", ["convnet3", "convnet"])
@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_fast_exact_kernels_hold_no_convolution_at_all(kernel, arch):
    """The built-in exact kernels (implementation=auto) never convolve: shifted slices (the
    program, before any lowering; compiling them is checked by the subprocess tests above)."""
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk

    k = {"ntk": build_ntk, "nngp": build_nngp}[kernel](arch=architecture(arch)).kernel_fn
    assert not _jaxpr_float64_convs(jax.value_and_grad(lambda s: jnp.sum(k(X, s, None))), X)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.slow
def test_neural_tangents_kernels_compile_to_no_float64_convolution(kernel):
    """neural-tangents convolves covariance maps with ``lax.conv``: routed at the lowering."""
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk

    k = {"ntk": build_ntk, "nngp": build_nngp}[kernel](arch=architecture("convnet3"), implementation="neural-tangents").kernel_fn
    fn = jax.value_and_grad(lambda s: jnp.sum(k(X, s, None)))
    assert _jaxpr_float64_convs(fn, X)  # the library's program convolves...
    assert not _compiled_float64_convs(fn, X)  # ...and the compiled module does not


@pytest.mark.parametrize("arch", ["convnet3", "convnet"])
def test_random_feature_trunks_hold_no_float64_convolution(arch):
    from distillbench_builtin.kernels.random_features import build_rf_nngp

    f = build_rf_nngp(arch=architecture(arch), num_networks=2, width=8).feature_fn
    assert not _jaxpr_float64_convs(jax.value_and_grad(lambda s: jnp.sum(f(s, KEY) ** 2)), X)  # a patch matmul


def test_docs_architecture_compiles_to_no_float64_convolution(tmp_path):
    """The docs' convnet2 (stax layers through neural-tangents, flax nn.Conv) in a fresh process."""
    code = r"""
import jax, jax.numpy as jnp
from distillbench.registry import load_registry
from distillbench.runner.pipeline import enable_float64
enable_float64()
architecture = load_registry().architecture
from distillbench_builtin.kernels.exact import build_nngp, build_ntk
from distillbench_builtin.kernels.random_features import build_rf_nngp
x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1), jnp.float64)
def convs(fn):
    text = jax.jit(jax.value_and_grad(fn)).lower(x).compile().as_text()
    return [l for l in text.splitlines() if " convolution(" in l and "f64[" in l]
found = {}
for name, build in (("ntk", build_ntk), ("nngp", build_nngp)):
    k = build(arch=architecture("convnet2")).kernel_fn
    found[name] = convs(lambda s: jnp.sum(k(x, s, None)))
f = build_rf_nngp(arch=architecture("convnet2"), num_networks=2, width=8).feature_fn
found["rf-nngp"] = convs(lambda s: jnp.sum(f(s, jax.random.PRNGKey(1)) ** 2))
assert not any(found.values()), found
print("ok")
"""
    site = docs_architecture_site(tmp_path / "site")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                         env=dict(ENV, PYTHONPATH=str(site)))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_the_rule_is_installed_on_this_stack():
    """``install`` falls back quietly where a future jax moved its lowering registry; on the
    supported stacks (CI runs the oldest and the newest) it must install."""
    from distillbench.compat import conv_lowering

    assert conv_lowering.install() is True


def test_a_bare_float64_convolution_is_routed_and_float32_is_not():
    w = jnp.ones((3, 3, 1, 2), jnp.float64)
    assert not _compiled_float64_convs(jax.value_and_grad(lambda a: jnp.sum(_conv(a, w) ** 2)), X)
    text = jax.jit(_conv).lower(X.astype(jnp.float32), w.astype(jnp.float32)).compile().as_text()
    assert " convolution(" in text  # other dtypes keep XLA's own convolution


def test_the_check_sees_a_float64_convolution_without_the_rule():
    """In a process that never enables distillbench's float64 (no rule), the compiled module of
    the same float64 convolution holds one: the structural tests above can fail."""
    code = r"""
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 2))
text = jax.jit(lambda a: jax.lax.conv_general_dilated(a, w, (1, 1), "SAME",
               dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(x).compile().as_text()
print(any(" convolution(" in l and "f64[" in l for l in text.splitlines()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]


# -- the routed convolution equals XLA's ---------------------------------------------------------

CASES = {
    "NHWC SAME": dict(lhs=(2, 7, 6, 3), rhs=(3, 3, 3, 4), dn=("NHWC", "HWIO", "NHWC"), strides=(1, 1),
                      padding="SAME"),
    "NCHW VALID strided": dict(lhs=(2, 3, 9, 8), rhs=(5, 3, 3, 2), dn=("NCHW", "OIHW", "NCHW"), strides=(2, 1),
                               padding="VALID"),
    "feature groups, negative pad": dict(lhs=(2, 8, 8, 4), rhs=(3, 3, 2, 6), dn=("NHWC", "HWIO", "NHWC"),
                                         strides=(1, 2), padding=((1, 2), (0, -1)), fg=2),
    "depthwise": dict(lhs=(2, 6, 6, 6), rhs=(3, 3, 1, 6), dn=("NHWC", "HWIO", "NHWC"), strides=(1, 1),
                      padding="SAME", fg=6),
    "1-d dilated": dict(lhs=(3, 10, 2), rhs=(4, 2, 5), dn=("NWC", "WIO", "NWC"), strides=(3,),
                        padding=((2, 1),), ld=(2,), rd=(2,)),
    "3-d": dict(lhs=(2, 5, 6, 7, 2), rhs=(2, 2, 3, 2, 3), dn=("NDHWC", "DHWIO", "NDHWC"), strides=(1, 1, 2),
                padding="SAME"),
    "batch groups": dict(lhs=(4, 6, 6, 4), rhs=(3, 3, 4, 6), dn=("NHWC", "HWIO", "NHWC"), strides=(1, 1),
                         padding="SAME", bg=2),
    "odd layouts": dict(lhs=(5, 2, 6, 3), rhs=(2, 3, 4, 3), dn=("HNWC", "OHWI", "CWNH"), strides=(1, 1),
                        padding=((1, 0), (2, 2))),
    "window larger than input": dict(lhs=(2, 2, 2, 1), rhs=(3, 3, 1, 2), dn=("NHWC", "HWIO", "NHWC"),
                                     strides=(1, 1), padding="VALID"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_routed_convolution_equals_xla_values_and_gradients(case):
    c = CASES[case]
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=c["lhs"]), rng.normal(size=c["rhs"])

    def f(x, w):
        return lax.conv_general_dilated(x, w, c["strides"], c["padding"], lhs_dilation=c.get("ld"),
                                        rhs_dilation=c.get("rd"), dimension_numbers=c["dn"],
                                        feature_group_count=c.get("fg", 1), batch_group_count=c.get("bg", 1),
                                        precision=lax.Precision.HIGHEST)

    def loss(x, w):
        return jnp.sum(jnp.sin(f(x, w)))

    reference = [f(jnp.float32(x), jnp.float32(w)), *jax.grad(loss, (0, 1))(jnp.float32(x), jnp.float32(w))]
    routed = [jax.jit(f)(x, w), *jax.jit(jax.grad(loss, (0, 1)))(x, w)]
    assert not _compiled_float64_convs(jax.grad(loss, (0, 1)), x, w)
    for got, want in zip(routed, reference):
        assert got.dtype == jnp.float64 and got.shape == want.shape
        scale = max(float(np.abs(want).max()) if want.size else 0.0, 1.0)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want, np.float64), atol=2e-5 * scale, rtol=0)

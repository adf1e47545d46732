"""Device-derived defaults (distillbench.devices): the choices for injected GPU descriptions, run
on a CPU, and their wiring into the built-in kernels (block and chunk sizes, matmul precision)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench import devices
from distillbench.devices import DeviceInfo
from helpers import architecture, build_kernel
from distillbench_builtin.kernels.random_features import example_bytes

GIB = 2**30
H100 = DeviceInfo(platform="gpu", kind="NVIDIA H100 80GB HBM3", count=1, memory_bytes=80 * GIB)
SMALL_GPU = DeviceInfo(platform="gpu", kind="small", count=1, memory_bytes=64 * 2**20)
BIG_CPU = DeviceInfo(platform="cpu", kind="cpu", count=1, memory_bytes=64 * GIB)


build = build_kernel


@pytest.fixture
def device(monkeypatch):
    """Make ``devices.current()`` return the description given to the returned setter."""

    def use(info):
        monkeypatch.setitem(devices._CACHE, "info", info)

    yield use


def test_describe_this_machine():
    info = devices.describe()
    assert info.platform == jax.default_backend()
    assert info.count == len(jax.local_devices())
    assert info.memory_bytes is None or info.memory_bytes > 0
    assert devices.current() == devices.current()


def test_memory_budget_cpu_keeps_the_tuned_value_and_fits_small_machines():
    assert devices.memory_budget_mb(BIG_CPU) == 256.0
    assert devices.memory_budget_mb(DeviceInfo("cpu", "cpu", 1, 1 * GIB)) == 128.0
    assert devices.memory_budget_mb(DeviceInfo("cpu", "cpu", 1, None)) == 256.0
    assert devices.memory_budget_mb(BIG_CPU, 32.0) == 32.0  # an explicit value wins


def test_memory_budget_gpu_is_a_quarter_of_its_memory():
    assert devices.memory_budget_mb(H100) == 20 * 1024
    assert devices.memory_budget_mb(DeviceInfo("gpu", "x", 1, None)) == 256.0
    assert devices.memory_budget_mb(H100, 512) == 512


def test_rf_chunk_cache_sized_on_cpu_memory_sized_on_gpu():
    cifar = example_bytes(architecture("convnet3"), 256, (32, 32, 3), jnp.float32)
    assert cifar == 4 * 32 * 32 * 256 * 4
    assert devices.rf_chunk_size(BIG_CPU, cifar) == 256
    # The RFAD paper's CIFAR setting (5120 targets, 256 channels) runs as one chunk on an H100.
    assert devices.rf_chunk_size(H100, cifar) >= 5120
    assert devices.rf_chunk_size(SMALL_GPU, cifar) == 256  # never below the CPU chunk
    assert devices.rf_chunk_size(H100, cifar, requested=64) == 64
    assert example_bytes(architecture("fc1"), 100, (8, 8, 1), jnp.float64) == 4 * 100 * 8


def test_rcig_rows_with_gradient_follow_the_device():
    mib = 2**20
    cifar_row = int(3.3 * mib)  # a width-128 network's row on 32x32x3 images (rcig.row_bytes)
    assert devices.gradient_rows(H100, cifar_row, 5000) == 0  # CIFAR-100 at 50 ipc: every row fits
    assert devices.gradient_rows(BIG_CPU, cifar_row, 5000) == int(8192 * mib // cifar_row)  # 8 GiB on a CPU
    assert devices.gradient_rows(DeviceInfo("cpu", "cpu", 1, 1 * GIB), cifar_row, 5000) == 2482  # fixed, not RAM
    assert devices.gradient_rows(SMALL_GPU, cifar_row, 5000) == 4
    assert devices.gradient_rows(SMALL_GPU, 100 * GIB, 5000) == 1  # never 0 rows
    assert devices.gradient_rows(DeviceInfo("gpu", "x", 1, None), cifar_row, 5000) == 0  # unknown: every row
    assert devices.gradient_rows(H100, 0, 5000) == 0
    assert devices.gradient_rows(H100, cifar_row, 5000, requested=2000) == 2000


def test_precision_names():
    assert devices.matmul_precision() == "highest"
    assert devices.matmul_precision("tf32") == "tensorfloat32"
    with pytest.raises(ValueError, match="tf32"):
        devices.matmul_precision("fast")


def _subjaxprs(value):
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _subjaxprs(v)


def _equations(closed):
    """Every equation of a jaxpr, nested ones (jit, scan bodies, custom VJP/JVP functions) included."""
    todo = [closed.jaxpr]
    while todo:
        jaxpr = todo.pop()
        for eqn in jaxpr.eqns:
            yield eqn
            for value in eqn.params.values():
                todo.extend(_subjaxprs(value))


def _primitives(closed, names=("dot_general", "conv_general_dilated")) -> list[str]:
    """The precision of every matmul/convolution in a jaxpr."""
    return [str(eqn.params.get("precision")) for eqn in _equations(closed) if eqn.primitive.name in names]


@pytest.mark.slow
def test_rf_nngp_chunks_follow_the_device(device):
    x = jax.random.normal(jax.random.PRNGKey(0), (300, 8, 8, 1), jnp.float32)
    key = jax.random.PRNGKey(1)
    device(BIG_CPU)
    cpu = build("rf-nngp", arch="convnet3", num_networks=1, width=4)
    cpu_jaxpr = str(jax.make_jaxpr(cpu.feature_fn)(x, key))
    device(H100)
    gpu = build("rf-nngp", arch="convnet3", num_networks=1, width=4)
    gpu_jaxpr = str(jax.make_jaxpr(gpu.feature_fn)(x, key))
    # CPU: 2 chunks of <= 256 under a lax.map; GPU: one chunk, no loop.
    assert cpu_jaxpr.count("scan[") == 1 and gpu_jaxpr.count("scan[") == 0
    np.testing.assert_allclose(gpu.feature_fn(x, key), cpu.feature_fn(x, key), rtol=1e-6, atol=1e-7)


def test_rf_nngp_products_run_at_the_requested_precision():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 8), jnp.float32)  # 8 channels: library convs
    key = jax.random.PRNGKey(1)
    for precision, expected in (("highest", "Precision.HIGHEST"), ("tf32", "Precision.HIGH")):
        k = build("rf-nngp", arch="convnet3", num_networks=1, width=8, precision=precision)
        precisions = _primitives(jax.make_jaxpr(k.kernel_fn)(x, x, key))
        assert precisions, "no matmul or convolution found"
        assert all(f"({expected}, {expected})" in p for p in precisions), (precision, precisions)


@pytest.mark.parametrize("arch", ["fc1", "convnet3"])
def test_exact_kernels_run_at_highest_precision(arch):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1), jnp.float32)
    k = build("ntk", arch=arch)
    # values and the support gradient (the fast conv kernels' forward has no matmul at all)
    grad = jax.value_and_grad(lambda b: jnp.sum(k.kernel_fn(x, b, None)))
    precisions = _primitives(jax.make_jaxpr(grad)(x))
    if arch == "fc1":
        assert precisions, "no matmul found"
    # (HIGHEST, DEFAULT): XLA keeps an op out of TF32 when any operand asks for more.
    assert all("Precision.HIGHEST" in p for p in precisions), precisions


@pytest.mark.slow
def test_exact_kernel_blocks_follow_the_device_memory(device):
    x1 = jax.random.normal(jax.random.PRNGKey(0), (12, 8, 8, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (10, 8, 8, 1), jnp.float64)
    device(H100)
    big = build("nngp", arch="convnet3").kernel_fn
    device(DeviceInfo("gpu", "tiny", 1, 4 * 2**20))  # a 1 MiB budget: many small blocks
    small = build("nngp", arch="convnet3").kernel_fn
    big_jaxpr = str(jax.make_jaxpr(lambda a, b: big(a, b, None))(x1, x2))
    small_jaxpr = str(jax.make_jaxpr(lambda a, b: small(a, b, None))(x1, x2))
    assert small_jaxpr.count("scan[") > big_jaxpr.count("scan[")
    np.testing.assert_allclose(small(x1, x2, None), big(x1, x2, None), rtol=1e-12)


def test_residual_allowance_follows_the_device():
    assert devices.residual_memory_mb(BIG_CPU) == 2048.0  # fixed: not the free RAM of the moment
    assert devices.residual_memory_mb(DeviceInfo("cpu", "cpu", 1, 8 * GIB)) == 1024.0  # an eighth
    assert devices.residual_memory_mb(H100) == 20 * 1024  # a quarter of the device
    assert devices.residual_memory_mb(DeviceInfo("cpu", "cpu", 1, None)) == 256.0


@pytest.mark.slow
def test_exact_kernel_keeps_block_residuals_only_when_they_fit(device):
    """Reverse mode reuses every block's residuals when they fit in the device's allowance (no
    ``jax.checkpoint`` left in the kernel) and recomputes the blocks otherwise: same gradients,
    and the kept residuals stay within the model that decides (blocking.residual_bytes)."""
    from distillbench_builtin.kernels import blocking

    shape = (8, 8, 1)
    x1 = jax.random.normal(jax.random.PRNGKey(0), (12, *shape), jnp.float64)
    x2 = jax.random.normal(jax.random.PRNGKey(1), (6, *shape), jnp.float64)
    budget = 1.0  # MiB: 5 image pairs at 8x8 in float64, so several blocks per pass
    residuals = (12 * 6 * blocking.residual_bytes("convnet3", shape, 8, "pairs")
                 + 18 * blocking.residual_bytes("convnet3", shape, 8, "images")) / 2**20
    grads = {}
    for info, keeps in ((BIG_CPU, True), (DeviceInfo("cpu", "cpu", 1, 2**20), False)):
        device(info)  # 1 MiB of RAM: an allowance of 1/8 MiB, below the residuals
        k = build("ntk", arch="convnet3", memory_budget_mb=budget).kernel_fn
        for fn, args in (((lambda a, b: k(a, b, None)), (x1, x2)), ((lambda b: k(b, b, None)), (x2,))):
            names = {eqn.primitive.name for eqn in _equations(jax.make_jaxpr(fn)(*args))}
            assert "scan" in names, "expected several blocks"
            assert bool(names & {"remat2", "checkpoint"}) != keeps, (keeps, names)

        def loss(s):
            return jnp.sum(jnp.sin(k(x1, s, None))) + jnp.sum(jnp.cos(k(s, s, None)))

        compiled = jax.jit(jax.grad(loss)).lower(x2).compile()  # once: run, and measured below
        grads[keeps] = compiled(x2)
        if keeps:
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
            slack = 1.0 if jax.__version_info__ < (0, 6) else 1.5  # as in test_fast_kernels
            outputs = 2 * (12 * 6 + 6 * 6) * 8 / 2**20
            assert temp <= slack * budget + residuals + outputs, (temp, budget, residuals)
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-12, atol=1e-14)

"""Architectures' finite networks (``Architecture.network``, issue 29 item 3): the built-ins' networks
with their normalizations, batch statistics as FRePo keeps them, ``frepo-conv`` equal to a
transcription of the reference's ``Conv``, the default network of a trunk-only architecture, and
the exact kernels refusing an architecture without an infinite-width form."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench import Component, hookimpl
from distillbench.components.architectures import NORMALIZATIONS, Architecture, complete
from distillbench.registry import load_registry
from distillbench.testing import ConformanceError, check_architecture

from helpers import architecture, build_kernel, run_cli

# Networks are compiled and trained in every test: the slow lane (README's full command).
pytestmark = pytest.mark.slow

BUILTINS = ("fc1", "fc3", "convnet3", "convnet", "frepo-conv")
CLASSES, WIDTH = 3, 4


def _images(n, shape, seed=0, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype))


# -- the reference's Conv, transcribed from yongchao97/FRePo lib/models/networks.py (class Conv) --------


class ReferenceConv(nn.Module):
    depth: int = 3
    width: int = 128
    kernel_size: tuple = (3, 3)
    num_classes: int = 10
    normalization: str = "identity"
    output: str = "feat_fc"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x, train=True):
        channel = x.shape[-1]
        if self.normalization == "batch":
            norm_layer = functools.partial(nn.BatchNorm, use_running_average=not train, epsilon=1e-05, momentum=0.1,
                                           dtype=self.dtype)
        elif self.normalization == "instance":
            norm_layer = functools.partial(nn.GroupNorm, num_groups=None, group_size=1, dtype=self.dtype)
        elif self.normalization == "identity":
            norm_layer = None
        else:
            raise ValueError(f"Unknown Normalization Layer {self.normalization}!")
        for i in range(self.depth):
            if i != 0 and self.normalization != "identity":
                x = norm_layer()(x)
            if i == 0 and channel == 1:
                pad = (self.kernel_size[0] // 2 + 2, self.kernel_size[0] // 2 + 2)
            else:
                pad = (self.kernel_size[0] // 2, self.kernel_size[0] // 2)
            x = nn.Conv(features=self.width * (2**i), kernel_size=self.kernel_size, padding=(pad, pad), use_bias=True,
                        dtype=self.dtype)(x)
            x = nn.relu(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        feat_fc = x
        x = nn.Dense(features=self.num_classes, dtype=self.dtype)(x)
        if self.output == "logit":
            return x
        if self.output == "feat_fc":
            return x, feat_fc


REFERENCE_NAMES = {"none": "identity", "instance": "instance", "batch": "batch"}


def _assert_close(got, want, rtol=1e-6):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape
        scale = max(np.abs(w).max(initial=0.0), 1e-30)
        assert np.abs(g - w).max(initial=0.0) <= rtol * scale, np.abs(g - w).max() / scale


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)], ids=["gray28", "rgb32"])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_frepo_conv_is_the_references_conv(image_shape, normalization):
    """Same variables -> same logits, features and batch statistics as the transcription, in both
    modes; the same initial variables too (same names, flax's default initialisers)."""
    x = _images(4, image_shape, seed=1)
    ours = architecture("frepo-conv").network(CLASSES, 8, normalization, jnp.float32)
    ref = ReferenceConv(width=8, num_classes=CLASSES, normalization=REFERENCE_NAMES[normalization])
    key = jax.random.PRNGKey(3)
    variables = ref.init(key, x, train=False)
    mine = ours.init(key, x, train=False)
    assert jax.tree.structure(mine) == jax.tree.structure(variables)
    _assert_close(mine, variables, rtol=0.0)
    if normalization == "batch":  # non-trivial running statistics for the evaluation mode
        _, stats = ref.apply(variables, x[::-1] * 2 + 1, train=True, mutable=["batch_stats"])
        variables = {**variables, **stats}
    _assert_close(ours.apply(variables, x, train=False), ref.apply(variables, x, train=False))
    _assert_close(ours.apply(variables, x, train=True, mutable=["batch_stats"]),
                  ref.apply(variables, x, train=True, mutable=["batch_stats"]))


def test_frepo_conv_shapes_and_trunk():
    """28x28 gray and 32x32 colour images both end at 4x4 x (4 width) features; the trunk is the
    network's parameters without the readout (and ignores w_std, b_std)."""
    arch = architecture("frepo-conv")
    assert arch.stax is None and arch.fast_exact is None
    for shape in ((28, 28, 1), (32, 32, 3)):
        assert arch.trunk_features(WIDTH, shape) == 4 * WIDTH * 4 * 4
    x = _images(2, (28, 28, 1))
    network = arch.network(CLASSES, WIDTH, "none", jnp.float32)
    variables = network.init(jax.random.PRNGKey(0), x)
    _, features = network.apply(variables, x)
    trunk_params = {"params": {k: v for k, v in variables["params"].items() if k != "Dense_0"}}
    for w_std, b_std in ((2**0.5, 0.1), (1.0, 0.0)):
        np.testing.assert_array_equal(arch.trunk(WIDTH, w_std, b_std, jnp.float32).apply(trunk_params, x), features)
    for shape, line in (((1, 3, 3, 1), "3x3x1 are too small"), ((1, 7, 7, 3), "7x7x3 are too small"),
                        ((3, 8, 8), "expected NHWC")):
        with pytest.raises(ValueError, match=line) as info:
            arch.check_image_shape(shape)
        assert "\n" not in str(info.value)
    arch.check_image_shape((1, 4, 4, 1))
    arch.check_image_shape((1, 8, 8, 3))


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_every_builtin_network_gives_logits_and_features(name, normalization):
    """``(logits (n, C), features (n, trunk_features))`` in the requested dtype for the normalizations
    the architecture offers; the others (fully connected nets: instance norm) are one-line errors."""
    arch = architecture(name)
    offered = normalization != "instance" or name not in ("fc1", "fc3")
    if not offered:
        with pytest.raises(ValueError, match=rf"^{name}'s network has no normalization '{normalization}' "
                                             r"\(choose from: none, batch\)$"):
            arch.network(CLASSES, WIDTH, normalization, jnp.float32)
        return
    x = _images(3, (8, 8, 1), dtype=np.float64)
    for dtype in (jnp.float32, jnp.float64):
        network = arch.network(CLASSES, WIDTH, normalization, dtype)
        variables = network.init(jax.random.PRNGKey(0), x, train=False)
        assert sorted(variables) == (["batch_stats", "params"] if normalization == "batch" else ["params"])
        logits, features = network.apply(variables, x, train=False)
        assert logits.shape == (3, CLASSES) and features.shape == (3, arch.trunk_features(WIDTH, (8, 8, 1)))
        assert logits.dtype == features.dtype == dtype
        assert all(p.dtype == dtype for p in jax.tree.leaves(variables))
        _, updates = network.apply(variables, x, train=True, mutable=["batch_stats"])
        assert all(p.dtype == dtype for p in jax.tree.leaves(updates))  # the statistics keep their dtype
    with pytest.raises(ValueError, match="no normalization 'layer'"):
        arch.network(CLASSES, WIDTH, "layer", jnp.float32)


@pytest.mark.parametrize("name", ["fc3", "convnet"])
def test_a_layout_network_without_normalization_is_its_trunk_under_a_readout(name):
    arch = architecture(name)
    x = _images(3, (8, 8, 1))
    network = arch.network(CLASSES, WIDTH, "none", jnp.float32)
    variables = network.init(jax.random.PRNGKey(0), x)
    logits, features = network.apply(variables, x)
    trunk_params = {"params": {k: v for k, v in variables["params"].items() if k != "readout"}}
    np.testing.assert_array_equal(arch.trunk(WIDTH, 2**0.5, 0.1, jnp.float32).apply(trunk_params, x), features)
    readout = variables["params"]["readout"]
    np.testing.assert_allclose(logits, features @ readout["kernel"] + readout["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["convnet3", "frepo-conv"])
def test_batch_stats_change_in_training_and_serve_evaluation(name):
    network = architecture(name).network(CLASSES, WIDTH, "batch", jnp.float32)
    x = _images(5, (8, 8, 1))
    variables = network.init(jax.random.PRNGKey(0), x, train=False)
    (logits, _), updates = network.apply(variables, x, train=True, mutable=["batch_stats"])
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(new) == jax.tree.structure(old)
    assert not any(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)))
    # training normalizes with the batch's statistics: the running ones do not matter
    (logits2, _), _ = network.apply({**variables, "batch_stats": new}, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(logits2, logits)
    # evaluation uses the running ones
    before = network.apply(variables, x, train=False)[1]
    after = network.apply({**variables, "batch_stats": new}, x, train=False)[1]
    assert not np.allclose(before, after)
    # and evaluation is per image (batch statistics would mix the images)
    np.testing.assert_allclose(network.apply({**variables, "batch_stats": new}, x[:2], train=False)[1], after[:2],
                               rtol=1e-5, atol=1e-6)


def test_batch_norm_momentum_is_frepos_in_flax_convention():
    """running = 0.1 * running + 0.9 * batch (flax's momentum=0.1, FRePo's value), biased variance."""
    network = architecture("convnet3").network(CLASSES, WIDTH, "batch", jnp.float32)
    x = _images(5, (8, 8, 1))
    variables = network.init(jax.random.PRNGKey(0), x, train=False)
    _, updates = network.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                               capture_intermediates=lambda module, _: isinstance(module, nn.Conv))
    conv0 = np.asarray(updates["intermediates"]["Conv_0"]["__call__"][0], np.float64)
    stats = updates["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.9 * conv0.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"], 0.1 + 0.9 * conv0.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["convnet3", "frepo-conv"])
def test_instance_norm_is_per_image(name):
    network = architecture(name).network(CLASSES, WIDTH, "instance", jnp.float32)
    x = _images(4, (8, 8, 1))
    variables = network.init(jax.random.PRNGKey(0), x)
    assert "batch_stats" not in variables
    np.testing.assert_allclose(network.apply(variables, x[:1], train=True)[1], network.apply(variables, x)[1][:1],
                               rtol=1e-5, atol=1e-6)


# -- third-party architectures -------------------------------------------------------------------------


class DenseTrunk(nn.Module):
    width: int
    w_std: float = 2**0.5
    b_std: float = 0.1
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.dtype)
        return nn.relu(dense(x.reshape(x.shape[0], -1).astype(self.dtype)))


def _registry_with(**architectures):
    plugin = types.ModuleType("networks_test_plugin")

    @hookimpl
    def distillbench_components():
        return [Component(kind="architecture", name=name, summary="test", build=lambda a=arch: a)
                for name, arch in architectures.items()]

    plugin.distillbench_components = distillbench_components
    return load_registry(entry_points=False, extra=(plugin,))


def test_a_trunk_only_architecture_gets_the_default_network():
    registry = _registry_with(dense=Architecture(trunk=DenseTrunk))
    arch = registry.architecture("dense")
    x = _images(3, (4, 4, 2))
    network = arch.network(CLASSES, 5)
    variables = network.init(jax.random.PRNGKey(0), x, train=True)
    logits, features = network.apply(variables, x, train=True)
    assert logits.shape == (3, CLASSES) and features.shape == (3, 5) == (3, arch.trunk_features(5, (4, 4, 2)))
    np.testing.assert_array_equal(features, DenseTrunk(5).apply({"params": variables["params"]["trunk"]}, x))
    with pytest.raises(ValueError, match="no normalization 'batch'") as info:
        arch.network(CLASSES, 5, "batch")
    assert "\n" not in str(info.value)
    check_architecture(Architecture(trunk=DenseTrunk), image_shape=(4, 4, 2))  # finite views only: no stax
    # the exact kernels refuse it when built (a built-in one is refused at plan time, below)
    with pytest.raises(ValueError, match=r"^architecture dense has no infinite-width \(stax\) form: use "
                                         r"kernel=rf-nngp or frepo-pool$"):
        registry.instantiate("kernel", "nngp", {"arch": "dense"})


class BrokenNetwork(nn.Module):
    """A network with a ``fault``: ``frozen_stats`` (its batch norm always uses the running statistics,
    never updates them) or ``logits_only`` (it returns the logits alone)."""

    fault: str
    width: int
    num_classes: int
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        h = DenseTrunk(self.width, dtype=self.dtype)(x)
        if self.fault == "frozen_stats":
            h = nn.BatchNorm(use_running_average=True, dtype=self.dtype, param_dtype=self.dtype)(h)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)(h)
        return logits if self.fault == "logits_only" else (logits, h)


def _broken(fault: str, offered: str):
    def network(num_classes, width, normalization="none", dtype=jnp.float32):
        if normalization != offered:
            raise ValueError(f"no normalization {normalization!r} (choose from: {offered})")
        return BrokenNetwork(fault, width, num_classes, dtype)

    return network


@pytest.mark.parametrize("network,message", [
    (_broken("frozen_stats", "batch"), "train=True must update the running batch_stats"),
    (_broken("logits_only", "none"), r"must return \(logits, features\)"),
])
def test_the_architecture_check_refuses_a_broken_network(network, message):
    with pytest.raises(ConformanceError, match=message):
        check_architecture(Architecture(trunk=DenseTrunk, network=network), image_shape=(4, 4, 1))


def test_the_architecture_check_passes_frepo_conv():
    check_architecture("architecture:frepo-conv")
    check_architecture(complete(architecture("frepo-conv")), image_shape=(8, 8, 3))


def test_rf_nngp_serves_frepo_conv():
    kernel = build_kernel("rf-nngp", arch="frepo-conv", width=4, num_networks=2)
    x = _images(3, (8, 8, 1), dtype=np.float64)
    k = np.asarray(kernel.kernel_fn(x, x, jax.random.PRNGKey(0)))
    assert k.shape == (3, 3) and np.all(np.isfinite(k))
    np.testing.assert_allclose(k, k.T, rtol=1e-10)


def test_ntk_with_frepo_conv_is_refused_in_one_line_exit_2(tmp_path):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "dataset=digits", "kernel=ntk", "kernel.arch=frepo-conv",
                     "objective.steps=1", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].endswith("architecture frepo-conv has no infinite-width (stax) form: use kernel=rf-nngp or "
                             "frepo-pool"), result.stderr
    assert not store.exists()

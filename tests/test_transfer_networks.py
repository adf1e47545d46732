"""DC's networks, the ones the field transfers sets to (issue 30 item 2): ``convnet-dc``, ``alexnet``,
``vgg11``, ``resnet18`` (``architectures/transfer.py``, from VICO-UoE/DatasetCondensation
``networks.py`` at 53f63a6). Their logits were checked against the reference's PyTorch modules on the
same weights (``benchmarks/check_transfer_networks.py``: equal to 1.3e-14 in float64, eval and train
mode, 14 variants); here, what needs no PyTorch: the reference's parameter counts and feature sizes,
the normalizations each offers, shapes refused, the exact kernels refusing them, conformance, and
the ``nn`` evaluator training one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.testing import check_architecture

from helpers import architecture, run_cli

#: ``sum(p.numel() for p in net.parameters())`` of the reference's modules, 10 classes, for a
#: 1x28x28 and a 3x32x32 image: ConvNet(ch, 10, 128, 3, 'relu', 'instancenorm', 'avgpooling'),
#: AlexNet(ch, 10), VGG11(ch, 10), ResNet18BN(ch, 10) (the same count as ResNet18).
REFERENCE_COUNTS = {
    ("convnet-dc", 128, "instance"): (317706, 320010),
    ("alexnet", 128, "none"): (1865802, 1872202),
    ("vgg11", 64, "instance"): (9229962, 9231114),
    ("resnet18", 64, "batch"): (11172810, 11173962),
}
#: The width of the reference's ``embed`` for those images.
FEATURES = {"convnet-dc": 2048, "alexnet": 3072, "vgg11": 512, "resnet18": 512}


def _shapes(name, width, normalization, image_shape):
    """Parameter count and (logits, features) shapes, without computing anything."""
    net = architecture(name).network(10, width, normalization, jnp.float32)
    x = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
    variables = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x, train=False), x)
    out = jax.eval_shape(lambda v, x: net.apply(v, x, train=False), variables, x)
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])), out


@pytest.mark.parametrize("key", sorted(REFERENCE_COUNTS))
def test_parameter_counts_and_features_are_the_references(key):
    name, width, normalization = key
    for image_shape, count in zip(((28, 28, 1), (32, 32, 3)), REFERENCE_COUNTS[key]):
        params, (logits, features) = _shapes(name, width, normalization, image_shape)
        assert params == count, (key, image_shape)
        assert logits.shape == (2, 10) and features.shape == (2, FEATURES[name])


def test_the_width_scales_every_layer_as_the_reference_scales_it():
    narrow, (_, features) = _shapes("vgg11", 8, "instance", (28, 28, 1))
    assert features.shape == (2, 64)  # VGG-11's last block has 8x the first's channels
    assert narrow < REFERENCE_COUNTS[("vgg11", 64, "instance")][0] / 50


@pytest.mark.parametrize("name,refused,offered", [
    ("vgg11", "none", "instance, batch"),
    ("resnet18", "none", "instance, batch"),
    ("alexnet", "instance", "none, batch"),
])
def test_a_normalization_the_reference_lacks_is_refused_naming_those_it_has(name, refused, offered):
    with pytest.raises(ValueError, match=f"{name}'s network has no normalization '{refused}' "
                                         rf"\(choose from: {offered}\)"):
        architecture(name).network(10, 8, refused)


@pytest.mark.parametrize("name,shape,need", [
    ("vgg11", (1, 16, 16, 1), 28), ("vgg11", (1, 28, 28, 3), 32), ("resnet18", (1, 16, 16, 3), 25),
    ("alexnet", (1, 2, 2, 1), 4),
])
def test_images_too_small_for_the_pooling_are_refused(name, shape, need):
    with pytest.raises(ValueError, match=f"need a side of at least {need}"):
        architecture(name).check_image_shape(shape)


def test_the_nn_evaluator_refuses_a_normalization_the_network_lacks_before_running(tmp_path):
    result = run_cli("run", "--store", str(tmp_path / "r.sqlite"), "dataset=digits", "evaluator=nn",
                     "evaluator.arch=vgg11", cwd=tmp_path)  # the evaluator's default: normalization=none
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].endswith("normalization=none: vgg11's network has no normalization 'none' (choose from: instance, batch)")
    assert not (tmp_path / "r.sqlite").exists()


def test_the_exact_kernels_refuse_them_in_one_line(tmp_path):
    result = run_cli("run", "--store", str(tmp_path / "r.sqlite"), "dataset=digits", "kernel=nngp",
                     "kernel.arch=alexnet", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "alexnet has no infinite-width (stax) form" in lines[0]
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FEATURES))
def test_conformance(name):
    check_architecture(f"architecture:{name}", image_shape=(28, 28, 1) if name in ("vgg11", "resnet18") else (8, 8, 1))


@pytest.mark.slow
def test_the_nn_evaluator_trains_one_on_the_support(tmp_path):
    store = tmp_path / "r.sqlite"
    result = run_cli("run", "--store", str(store), "dataset=digits", "ipc=1", "objective.steps=2", "evaluator=nn",
                     "evaluator.arch=alexnet", "evaluator.width=4", "evaluator.steps=3", "evaluator.seeds=1",
                     "evaluator.normalization=batch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json
    import sqlite3

    with sqlite3.connect(store) as db:
        (status, metrics), = db.execute("select status, metrics from runs").fetchall()
    metrics = json.loads(metrics)
    assert status == "done" and metrics["eval_arch"] == "alexnet" and 0.0 <= metrics["acc"] <= 1.0

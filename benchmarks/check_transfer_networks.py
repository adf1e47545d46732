"""DC's networks in distillbench (``architectures/transfer.py``: ``convnet-dc``, ``alexnet``, ``vgg11``,
``resnet18``) against the reference's PyTorch modules, on the same weights (issue 30 item 2).

Get the reference and a PyTorch environment (benchmark only; never a dependency, never in CI)::

    git clone https://github.com/VICO-UoE/DatasetCondensation /tmp/dc-ref     # checked at 53f63a6
    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy

Run::

    python benchmarks/check_transfer_networks.py --reference /tmp/dc-ref --torch-python /tmp/torchenv/bin/python

The PyTorch side (a child process of ``--torch-python``) builds each module of the reference's
``networks.py`` in float64 (``ConvNet`` with instance and batch norm, ``AlexNet``, ``VGG11``,
``VGG11BN``, ``ResNet18``, ``ResNet18BN``) for a 1x28x28 and a 3x32x32 input, draws non-trivial
normalization parameters and running statistics, and saves every parameter and the logits of 4
random images in eval and in train mode. This side loads the same parameters into distillbench's
network (PyTorch's NCHW kernels and the classifier's NCHW flattening permuted to NHWC) and prints the
largest relative difference of the logits per network; the bar is 1e-10 (float64).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

#: (distillbench name, normalization, reference constructor called with (channel, image side)).
NETWORKS = (
    ("convnet-dc", "instance", "ConvNet(c, 10, 128, 3, 'relu', 'instancenorm', 'avgpooling', (s, s))"),
    ("convnet-dc", "batch", "ConvNet(c, 10, 128, 3, 'relu', 'batchnorm', 'avgpooling', (s, s))"),
    ("alexnet", "none", "AlexNet(c, 10)"),
    ("vgg11", "instance", "VGG11(c, 10)"),
    ("vgg11", "batch", "VGG11BN(c, 10)"),
    ("resnet18", "instance", "ResNet18(c, 10)"),
    ("resnet18", "batch", "ResNet18BN(c, 10)"),
)
WIDTHS = {"convnet-dc": 128, "alexnet": 128, "vgg11": 64, "resnet18": 64}
INPUTS = ((1, 28), (3, 32))
BAR = 1e-10

_TORCH_SIDE = r'''
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
import networks as N
torch.manual_seed(0)
out = {}
for name, norm, make in NETWORKS:
    for c, s in INPUTS:
        m = eval("N." + make).double()
        tag = f"{name}/{norm}/{c}"
        layers = [mod for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
        for i, mod in enumerate(layers):
            with torch.no_grad():
                if isinstance(mod, (torch.nn.GroupNorm, torch.nn.BatchNorm2d)):
                    mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.5, 0.5)
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.uniform_(-0.2, 0.2); mod.running_var.uniform_(0.5, 1.5)
            out[f"{tag}/{i:03d}/kind"] = np.array(type(mod).__name__)
            out[f"{tag}/{i:03d}/weight"] = mod.weight.detach().numpy().copy()
            if mod.bias is not None:
                out[f"{tag}/{i:03d}/bias"] = mod.bias.detach().numpy().copy()
            if isinstance(mod, torch.nn.BatchNorm2d):
                out[f"{tag}/{i:03d}/mean"] = mod.running_mean.numpy().copy()
                out[f"{tag}/{i:03d}/var"] = mod.running_var.numpy().copy()
        x = torch.randn(4, c, s, s, dtype=torch.float64)
        m.eval(); out[tag + "/eval"] = m(x).detach().numpy()
        m.train(); out[tag + "/train"] = m(x).detach().numpy()
        out[tag + "/x"] = x.numpy().transpose(0, 2, 3, 1)
np.savez(sys.argv[2], **out)
'''


def torch_side(python: str, reference: str, path: str) -> None:
    code = f"NETWORKS = {NETWORKS!r}\nINPUTS = {INPUTS!r}\n" + _TORCH_SIDE
    result = subprocess.run([python, "-c", code, reference, path], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the PyTorch side failed: {result.stderr.strip()[-2000:]}")


def _loaded(ref, tag: str, variables):
    """``variables`` with the reference's parameters, in creation order (flax's and PyTorch's agree)."""
    import numpy as np

    params, stats = dict(variables["params"]), dict(variables.get("batch_stats", {}))
    indices = sorted({k.split("/")[3] for k in ref.files if k.startswith(tag + "/") and k.endswith("/kind")})
    if len(indices) != len(params):
        raise SystemExit(f"{tag}: {len(params)} layers here, {len(indices)} in the reference")
    channels = None
    for name, i in zip(list(params), indices):
        get = lambda field: ref[f"{tag}/{i}/{field}"] if f"{tag}/{i}/{field}" in ref.files else None  # noqa: E731
        kind, layer = str(get("kind")), dict(params[name])
        if kind == "Conv2d":
            layer["kernel"] = get("weight").transpose(2, 3, 1, 0)
            channels = get("weight").shape[0]
        elif kind == "Linear":
            w = get("weight")  # (out, C*H*W), flattened NCHW
            side = int(round((w.shape[1] // channels) ** 0.5))
            layer["kernel"] = w.reshape(w.shape[0], channels, side, side).transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
        else:
            layer["scale"] = get("weight")
            if kind == "BatchNorm2d":
                stats[name] = {"mean": get("mean"), "var": get("var")}
        if get("bias") is not None:
            layer["bias"] = get("bias")
        if any(np.shape(layer[k]) != np.shape(params[name][k]) for k in params[name]):
            raise SystemExit(f"{tag}: layer {name} has other shapes than the reference's {kind}")
        params[name] = layer
    return {"params": params, **({"batch_stats": stats} if stats else {})}


def compare(path: str) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from distillbench_builtin.architectures.transfer import transfer_architecture

    ref, worst = np.load(path), 0.0
    print("| network | normalization | input | eval: max rel diff | train: max rel diff |")
    print("|---|---|---|---|---|")
    for name, norm, _ in NETWORKS:
        for c, s in INPUTS:
            tag = f"{name}/{norm}/{c}"
            net = transfer_architecture(name).network(10, WIDTHS[name], norm, jnp.float64)
            x = jnp.asarray(ref[tag + "/x"])
            variables = _loaded(ref, tag, net.init(jax.random.PRNGKey(0), x, train=False))
            diffs = []
            for mode in ("eval", "train"):
                out = net.apply(variables, x, train=mode == "train", mutable=["batch_stats"])[0][0]
                want = ref[f"{tag}/{mode}"]
                diffs.append(float(np.max(np.abs(np.asarray(out) - want)) / np.max(np.abs(want))))
            worst = max(worst, *diffs)
            print(f"| {name} | {norm} | {c}x{s}x{s} | {diffs[0]:.1e} | {diffs[1]:.1e} |")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--torch-python", required=True, help="a Python interpreter with torch and numpy")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.reference, "networks.py")):
        raise SystemExit(f"--reference {args.reference}: no networks.py there (a DatasetCondensation checkout?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reference.npz")
        torch_side(args.torch_python, args.reference, path)
        worst = compare(path)
    print(f"worst {worst:.1e} (bar {BAR:.0e}): {'PASS' if worst <= BAR else 'FAIL'}")
    sys.exit(0 if worst <= BAR else 1)


if __name__ == "__main__":
    main()

"""Built-in architectures (declarations only; the networks are imported lazily).

Each is one ``Architecture`` (``distillbench.components.architectures``): its stax network for
the exact kernels, its flax trunk for random features and the ``nn`` evaluator, its trainable
network (``architectures/finite.py``), and the fast exact recursions of ``kernels/fast_exact.py``.
``frepo-conv`` and DC's networks (``architectures/transfer.py``: ``convnet-dc``, ``alexnet``,
``vgg11``, ``resnet18``) have only the finite views (no stax: the exact kernels refuse them).
"""

from distillbench import Component

_SUMMARIES = {
    "fc1": "fully connected, 1 hidden ReLU layer",
    "fc3": "fully connected, 3 hidden ReLU layers",
    "convnet3": "3 x (3x3 conv, ReLU, 2x2 average pool)",
    "convnet": "3x3 conv + ReLU, then 3 x (3x3 conv, ReLU, 2x2 average pool) (KIP's ConvNet)",
    "frepo-conv": "FRePo's ConvNet: 3 x ([norm,] 3x3 conv, ReLU, 2x2 average pool), width x 1, 2, 4 channels, "
                  "flax default init (its trunk ignores w_std/b_std); finite only: no ntk/nngp",
    "convnet-dc": "DC's ConvNet (DC/DSA networks.py): 3 x (3x3 conv, [norm,] ReLU, 2x2 avg pool); reference "
                  "width 128, instance norm; finite only",
    "alexnet": "DC's AlexNet (networks.py): 5 convs (width x 1, 1.5, 2, 1.5, 1.5), 3 max pools; reference "
               "width 128, norm none or batch; finite only",
    "vgg11": "DC's VGG-11 (networks.py): 8 convs (width x 1..8), 5 max pools; reference width 64, instance "
             "or batch norm; finite only",
    "resnet18": "DC's ResNet-18 (networks.py): basic blocks [2, 2, 2, 2], width x 1..8; reference width 64, "
                "instance or batch norm; finite only",
}

#: Where a built-in's builder lives, when not in ``networks.py``: DC's networks.
_MODULE = {name: "transfer" for name in ("convnet-dc", "alexnet", "vgg11", "resnet18")}

#: Built-in architectures without an infinite-width (stax) form: the exact kernels refuse them
#: before any compute (JAX-free, for the kernels' ``validate``).
WITHOUT_STAX = ("frepo-conv", "convnet-dc", "alexnet", "vgg11", "resnet18")


def no_stax_form(arch: str | None) -> str:
    """Why the exact kernels refuse ``arch`` (one line)."""
    return f"architecture {arch} has no infinite-width (stax) form: use kernel=rf-nngp or frepo-pool"

COMPONENTS = [
    Component(kind="architecture", name=name, summary=summary,
              build=f"distillbench_builtin.architectures.{_MODULE.get(name, 'networks')}:build_{name.replace('-', '_')}",
              learning=name in WITHOUT_STAX)  # finite networks to train only: auto references skip it
    for name, summary in _SUMMARIES.items()
]

"""Built-in architectures (declarations only; the networks are imported lazily).

Each is one ``Architecture`` (``distillbench.components.architectures``): its stax network for
the exact kernels, its flax trunk for random features and the ``nn`` evaluator, and the fast
exact recursions of ``kernels/fast_exact.py``.
"""

from distillbench import Component

_SUMMARIES = {
    "fc1": "fully connected, 1 hidden ReLU layer",
    "fc3": "fully connected, 3 hidden ReLU layers",
    "convnet3": "3 x (3x3 conv, ReLU, 2x2 average pool)",
    "convnet": "3x3 conv + ReLU, then 3 x (3x3 conv, ReLU, 2x2 average pool) (KIP's ConvNet)",
}

COMPONENTS = [
    Component(kind="architecture", name=name, summary=summary,
              build=f"distillbench_builtin.architectures.networks:build_{name}")
    for name, summary in _SUMMARIES.items()
]

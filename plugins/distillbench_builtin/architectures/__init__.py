"""Built-in architectures (declarations only; the networks are imported lazily).

Each is one ``Architecture`` (``distillbench.components.architectures``): its stax network for
the exact kernels, its flax trunk for random features and the ``nn`` evaluator, its trainable
network (``architectures/finite.py``), and the fast exact recursions of ``kernels/fast_exact.py``.
``frepo-conv`` has only the finite views (no stax: the exact kernels refuse it).
"""

from distillbench import Component

_SUMMARIES = {
    "fc1": "fully connected, 1 hidden ReLU layer",
    "fc3": "fully connected, 3 hidden ReLU layers",
    "convnet3": "3 x (3x3 conv, ReLU, 2x2 average pool)",
    "convnet": "3x3 conv + ReLU, then 3 x (3x3 conv, ReLU, 2x2 average pool) (KIP's ConvNet)",
    "frepo-conv": "FRePo's ConvNet: 3 x ([norm,] 3x3 conv, ReLU, 2x2 average pool), width x 1, 2, 4 channels, "
                  "flax default init (its trunk ignores w_std/b_std); finite only: no ntk/nngp",
}

#: Built-in architectures without an infinite-width (stax) form: the exact kernels refuse them
#: before any compute (JAX-free, for the kernels' ``validate``).
WITHOUT_STAX = ("frepo-conv",)


def no_stax_form(arch: str | None) -> str:
    """Why the exact kernels refuse ``arch`` (one line)."""
    return f"architecture {arch} has no infinite-width (stax) form: use kernel=rf-nngp or frepo-pool"

COMPONENTS = [
    Component(kind="architecture", name=name, summary=summary,
              build=f"distillbench_builtin.architectures.networks:build_{name.replace('-', '_')}",
              learning=name in WITHOUT_STAX)  # finite networks to train only: auto references skip it
    for name, summary in _SUMMARIES.items()
]

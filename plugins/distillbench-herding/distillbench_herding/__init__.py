"""distillbench-herding: kernel herding, a selection baseline for dataset distillation.

This module is what the ``distillbench`` entry point names. It only declares the component (no
JAX import); the implementation in ``distillbench_herding.herding`` is imported when a run uses it.
"""

from distillbench import Component, Param, hookimpl

__version__ = "0.1.0"

#: The distillbench plugin API version(s) this plugin is written for.
DISTILLBENCH_API = 2

COMPONENTS = [
    Component(
        kind="objective",
        name="herding",
        summary="kernel herding: per class, greedily pick real images matching the class kernel mean",
        build="distillbench_herding.herding:build_herding",
        defaults={"kernel": "nngp", "loss": "mse"},
        params=(
            Param("pool", int, 100, "candidate real images per class (a seeded class-balanced draw)", min=1),
            Param("reg", float, 1e-6, "KRR ridge of the reported loss, scaled by tr(K_SS)/|S|",
                  min=0.0, min_open=True, role="ridge"),
            Param("dtype", str, "float64", "dtype of the kernel computation", choices=("float64", "float32")),
        ),
    ),
]


@hookimpl
def distillbench_components():
    return COMPONENTS

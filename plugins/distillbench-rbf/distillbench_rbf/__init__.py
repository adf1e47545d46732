"""distillbench-rbf: a Gaussian RBF kernel for distillbench, exact or as random Fourier features.

This module is what the ``distillbench`` entry point names. It only declares the component (no
JAX import), so ``distillbench list`` stays fast; the implementation is in
``distillbench_rbf.kernel`` and is imported when a run uses the kernel.
"""

from distillbench import Component, Param, hookimpl

__version__ = "0.1.0"

#: The distillbench plugin API version(s) this plugin is written for.
DISTILLBENCH_API = 2

COMPONENTS = [
    Component(
        kind="kernel",
        name="rbf",
        summary="Gaussian RBF kernel exp(-|x-x'|^2 / (2 l^2 d)); exact, or random Fourier features",
        build="distillbench_rbf.kernel:build_rbf",
        params=(
            Param("length_scale", float, 1.0,
                  "length scale l, relative to sqrt(d) for d = pixels x channels (fixed during a run)",
                  min=0.0, min_open=True),
            Param("features", int, 0,
                  "0 = exact kernel; N > 0 = N random Fourier features (feature-map form, one draw per key)",
                  min=0),
        ),
    ),
]


@hookimpl
def distillbench_components():
    return COMPONENTS

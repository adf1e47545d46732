"""Built-in evaluators (declarations only; implementations are imported lazily)."""

from distillbench import Component, Param

COMPONENTS = [
    Component(
        kind="evaluator",
        name="krr",
        summary="test accuracy/MSE of kernel ridge regression on the support set (exact kernel by default)",
        build="distillbench_builtin.evaluators.krr:build_krr",
        params=(
            Param("kernel", str, "nngp", "registered kernel used for evaluation", component="kernel"),
            Param("arch", str, "auto",
                  "architecture of the evaluation kernel; auto = the run kernel's arch, else fc1"),
            Param("reg", float, None, "KRR ridge scaled by tr(K_SS)/|S|; none = the objective's reg, else 1e-6",
                  min=0.0, min_open=True, nullable=True),
            Param("dtype", str, "float64", "dtype of the kernel computation (the solve is float64)",
                  choices=("float64", "float32")),
        ),
    ),
]

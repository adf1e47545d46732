"""Built-in kernels (declarations only; implementations are imported lazily)."""

from distillbench import Component, Param

_ARCHS = ("fc1", "fc3", "convnet3", "convnet")


def _common(default_arch: str) -> tuple[Param, ...]:
    return (
        Param("arch", str, default_arch, "network architecture whose kernel this is", choices=_ARCHS),
        Param("w_std", float, 2**0.5, "weight standard deviation (NTK parameterization)", min=0.0, min_open=True),
        Param("b_std", float, 0.1, "bias standard deviation", min=0.0),
    )


_BLOCK = Param(
    "block_size",
    int,
    None,
    "max rows/cols per kernel block (bounds memory); none = from memory_budget_mb",
    min=1,
    nullable=True,
)
_EXACT = (
    _BLOCK,
    Param(
        "memory_budget_mb",
        float,
        256.0,
        "working memory one kernel block may use (MiB), values and gradients; sets the block sizes",
        min=1.0,
    ),
    Param(
        "implementation",
        str,
        "auto",
        "auto = fast (distillbench's own recursions) for the built-in architectures; "
        "neural-tangents = the reference stax kernel",
        choices=("auto", "fast", "neural-tangents"),
    ),
)

COMPONENTS = [
    Component(
        kind="kernel",
        name="ntk",
        summary="exact infinite-width neural tangent kernel",
        build="distillbench_builtin.kernels.exact:build_ntk",
        params=(*_common("fc1"), *_EXACT),
    ),
    Component(
        kind="kernel",
        name="nngp",
        summary="exact infinite-width NNGP kernel",
        build="distillbench_builtin.kernels.exact:build_nngp",
        params=(*_common("fc1"), *_EXACT),
    ),
    Component(
        kind="kernel",
        name="rf-nngp",
        summary="random-feature NNGP from freshly sampled finite networks (RFAD)",
        build="distillbench_builtin.kernels.random_features:build_rf_nngp",
        params=(
            *_common("fc1"),
            Param("num_networks", int, 8, "random networks sampled per kernel draw (N)", min=1),
            Param("width", int, 256, "channels (convs) or hidden units (fc) of each random network", min=1),
            Param("batch_size", int, 256, "max examples per forward chunk (bounds memory; cache-sized chunks run faster)", min=1),
        ),
    ),
]

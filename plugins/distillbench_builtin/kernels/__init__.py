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
    "max rows/cols per kernel block (bounds memory); none = auto from the image size",
    min=1,
    nullable=True,
)

COMPONENTS = [
    Component(
        kind="kernel",
        name="ntk",
        summary="exact infinite-width neural tangent kernel (neural-tangents)",
        build="distillbench_builtin.kernels.exact:build_ntk",
        params=(*_common("fc1"), _BLOCK),
    ),
    Component(
        kind="kernel",
        name="nngp",
        summary="exact infinite-width NNGP kernel (neural-tangents)",
        build="distillbench_builtin.kernels.exact:build_nngp",
        params=(*_common("fc1"), _BLOCK),
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
            Param("batch_size", int, 1280, "max examples per forward chunk (bounds memory)", min=1),
        ),
    ),
]

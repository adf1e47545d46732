"""Built-in kernels (declarations only; implementations are imported lazily)."""

from distillbench import Component, Param
from distillbench_builtin.architectures.layout import normalization_problem

def _common(default_arch: str) -> tuple[Param, ...]:
    return (
        Param("arch", str, default_arch, "network architecture whose kernel this is (a registered architecture: "
              "distillbench list architecture)", component="architecture"),
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
        None,
        "working memory one kernel block may use (MiB), values and gradients; auto = from the device's memory",
        min=1.0,
        nullable=True,
    ),
    Param(
        "implementation",
        str,
        "auto",
        "auto = fast when the architecture has a fast implementation (the built-ins: distillbench's own "
        "recursions), else neural-tangents; neural-tangents = the reference stax kernel",
        choices=("auto", "fast", "neural-tangents"),
    ),
)



def _validate_exact(params) -> str | None:
    """A built-in architecture without a stax form has no exact kernel (a third-party one is refused
    when built); ``implementation=neural-tangents`` needs the optional extra (the planner checks
    that ``arch`` exists)."""
    from distillbench.compat.neural_tangents import MISSING_HINT, has_neural_tangents
    from distillbench_builtin.architectures import WITHOUT_STAX, no_stax_form

    if params.get("arch") in WITHOUT_STAX:
        return no_stax_form(params["arch"])
    if params.get("implementation") == "neural-tangents" and not has_neural_tangents():
        return f"kernel.implementation=neural-tangents: {MISSING_HINT}"
    return None


def _validate_finite_ntk(params) -> str | None:
    """``parameterization=ntk`` scales by the RFAD initialisation: a built-in architecture without an
    infinite-width form is refused at plan time (a third-party one when built)."""
    from distillbench_builtin.architectures import WITHOUT_STAX

    if params.get("parameterization") == "ntk" and params.get("arch") in WITHOUT_STAX:
        return (f"kernel.parameterization=ntk needs {params['arch']}'s RFAD initialisation (an architecture with "
                f"an infinite-width form); use kernel.parameterization=standard")
    return None


COMPONENTS = [
    Component(
        kind="kernel",
        name="ntk",
        summary="exact infinite-width neural tangent kernel",
        build="distillbench_builtin.kernels.exact:build_ntk",
        default=True,  # used when a run names no kernel
        params=(*_common("fc1"), *_EXACT),
        validate=_validate_exact,
    ),
    Component(
        kind="kernel",
        name="nngp",
        summary="exact infinite-width NNGP kernel",
        build="distillbench_builtin.kernels.exact:build_nngp",
        params=(*_common("fc1"), *_EXACT),
        validate=_validate_exact,
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
            Param("batch_size", int, None, "max examples per forward chunk (bounds memory); "
                  "auto = 256 on CPU (cache-sized), as many as memory allows on a GPU", min=1, nullable=True),
            Param("precision", str, "highest", "float32 matmul precision: highest, or tf32 (faster on GPUs, ~1e-3 relative error)",
                  choices=("highest", "tf32")),
        ),
    ),
    Component(
        kind="kernel",
        name="finite-ntk",
        summary="empirical NTK of frozen random finite networks (the network linearised at its init: RCIG's "
                "frozen finite-width NTK)",
        build="distillbench_builtin.kernels.finite_ntk:build_finite_ntk",
        validate=_validate_finite_ntk,
        params=(
            *_common("fc1"),
            Param("width", int, 64, "channels (convs) or hidden units (fc) of each network", min=1),
            Param("num_networks", int, 1, "random networks per kernel draw; the kernel is their mean", min=1),
            Param("parameterization", str, "ntk", "ntk: gradients scaled by each parameter's initial std (tends "
                  "to the exact ntk kernel as the width grows; architectures with an infinite-width form); "
                  "standard: the network's own gradients (RCIG's linearisation)", choices=("ntk", "standard")),
        ),
    ),
    Component(
        kind="kernel",
        name="frepo-pool",
        summary="FRePo's conjugate kernel: penultimate features of a pool of finite networks trained on the "
                "support while it is distilled",
        build="distillbench_builtin.kernels.learned_pool:build_frepo_pool",
        validate=normalization_problem,
        learning=True,
        params=(
            Param("arch", str, "frepo-conv", "network architecture of the pool (a registered architecture: "
                  "distillbench list architecture)", component="architecture"),
            Param("width", int, 32, "channels (convs) or hidden units (fc) of each network (of the first layer "
                  "for frepo-conv, which doubles them layer by layer); CPU-sized, the reference: 128", min=1),
            Param("normalization", str, "batch", "the networks' normalization (batch: running statistics in "
                  "the kernel, batch statistics while they train)", choices=("none", "instance", "batch")),
            Param("num_networks", int, 10, "networks in the pool (P)", min=1),
            Param("max_updates", int, 100, "a network is re-initialised when its age (online updates since "
                  "its initialisation) exceeds T; initial ages are staggered, (T // P) * i", min=0),
            Param("lr", float, 3e-4, "learning rate of the networks' online Adam", min=0.0, min_open=True),
            Param("batch", int, 1000, "support examples per online update (all when the support holds fewer, "
                  "else a uniform sample without replacement)", min=1),
        ),
    ),
    Component(
        kind="kernel",
        name="rcig-pool",
        summary="RCIG's conjugate kernel: penultimate features of a pool of softplus networks, each trained a "
                "random number of steps per distillation step and reset when old (objective=rcig linearises them)",
        build="distillbench_builtin.kernels.rcig_pool:build_rcig_pool",
        learning=True,
        params=(
            Param("arch", str, "frepo-conv", "network architecture of the pool (a registered architecture: "
                  "distillbench list architecture; frepo-conv is RCIG's Conv)", component="architecture"),
            Param("width", int, 32, "channels (convs) or hidden units (fc) of each network (of the first layer "
                  "for frepo-conv, which doubles them layer by layer); CPU-sized, the reference: 128", min=1),
            Param("num_networks", int, 30, "networks in the pool (the reference's pool_model_count)", min=1),
            Param("max_updates", int, 100, "a network is re-initialised once its age (optimizer steps since its "
                  "initialisation) reaches this (the reference's max_online_steps)", min=1),
            Param("max_steps", int, 16, "after each distillation step the network used takes 1 .. max_steps - 1 "
                  "Adam steps, uniformly drawn (the reference's n_max_steps_pool)", min=2),
            Param("lr", float, 5e-5, "learning rate of the networks' Adam (the reference's pool_learning_rate)",
                  min=0.0, min_open=True),
            Param("softplus_temp", float, 60.0, "beta of the smooth ReLU softplus(beta x)/beta the networks use "
                  "(the reference's softplus_temp; 0: ReLU)", min=0.0),
        ),
    ),
]

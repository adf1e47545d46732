"""Built-in objectives (declarations only; implementations are imported lazily).

``kip``: Kernel Inducing Points (gradient descent on the KRR loss, exact kernels, float64).
``ls``: Label Solve, the closed-form labels minimizing the KIP MSE loss for real support images.
``rfad``: RFAD, KIP with random-feature NNGP, Platt loss and no gradient through targets.
``frepo``: FRePo, KIP's meta-gradient through the kernel of a pool of networks trained meanwhile.
``rcig``: RCIG, implicit gradients through the linearised networks of a pool (kernel rcig-pool).
"""

from distillbench import Component, Param

def _init(noise: str) -> Param:
    return Param("init", str, "real", f"support initialisation: class-balanced real images or {noise} noise",
                 choices=("real", "noise"))


def _options(val_models: int, loss_opt: str) -> tuple[Param, ...]:
    """Schedule, corruption and model-selection parameters shared by the gradient objectives (SPEC §4)."""
    return (
        Param("loss_lr", float, 1e-2, f"learning rate of the loss's own parameters (platt's log-scale k), "
              f"in {loss_opt} (0: frozen)", min=0.0),
        Param("lr_schedule", str, "constant", "learning-rate schedule of the support: constant (the papers) "
              "or cosine decay from lr to 0 over the steps (a less noisy final support in short runs)",
              choices=("constant", "cosine")),
        Param("corruption", float, 0.0, "rho: fixed random fraction of support pixels never updated "
              "(KIP_rho/RFAD_rho: use with init=noise)", min=0.0, max=0.999),
        Param("val_every", int, 0, "model selection: validation loss every k steps, best support kept "
              "(0: off; RFAD reference: 40)", min=0),
        Param("val_per_class", int, None, "training images per class held out for validation (never targets, "
              "never test); none = the RFAD reference's 500 (10 classes) or 100, or half the smallest class when "
              "that holds fewer", min=1, nullable=True),
        Param("val_models", int, val_models, "kernel draws pooled into the one validation kernel (their mean; "
              "rf-nngp: val_models x num_networks networks, RFAD reference: 16 = 2 x 8)", min=1),
        Param("patience", int, 1000, "stop after this many steps without a better validation loss", min=1),
    )


def _transform(default: bool, family: str) -> tuple[Param, ...]:
    """The learned support transform (``transform.py``): a d x d matrix T, every kernel sees X @ T."""
    return (
        Param("transform", bool, default, "learn an identity-initialised d x d matrix T (d = H*W*C) with the "
              "support: every kernel, the validation and the stored set see the images X @ T (the RFAD "
              "reference's transform_mat; the paper does not mention it)"),
        Param("transform_lr", float, 5e-5, f"learning rate of T in {family} (RFAD reference: 5e-5)",
              min=0.0, min_open=True),
    )


def _dtype(default: str, what: str) -> Param:
    return Param("dtype", str, default, what, choices=("float64", "float32"))


def check_transform(params, info):
    """Refuse at plan time a learned support transform whose d x d matrices cannot fit (one line)."""
    from distillbench_builtin.objectives.transform import fit_problem  # JAX-free

    return fit_problem(params, info.image_shape)


def check_rcig_rows(params, info, ipc):
    """Refuse at plan time more rows with gradient than the support (or a step's targets) has."""
    seen = ipc * info.num_classes * (2 if params.get("flip") else 1)
    rows = params.get("support_rows")
    if rows is not None and rows >= seen:
        return (f"objective.support_rows={rows} is not below the {seen} rows the networks see (ipc x classes"
                f"{', x 2 with flip' if params.get('flip') else ''}); use 0 (every row) or fewer")
    targets = min(int(params.get("target_batch", 1)), sum(info.train_class_counts))
    if params.get("target_rows", 0) >= targets:
        return (f"objective.target_rows={params['target_rows']} is not below the {targets} targets of a step; use "
                f"0 (every target) or fewer")
    return None


def check_ls(choices):
    """LS solves the squared loss in closed form: refuse any other loss."""
    loss = choices.get("loss")
    if loss is not None and loss != "mse":
        return (f"ls computes the labels minimizing the squared (mse) loss in closed form, so loss={loss} "
                f"does not apply; use objective=kip objective.learn_labels=true to learn labels for it")
    return None


COMPONENTS = [
    Component(
        kind="objective",
        name="kip",
        summary="Kernel Inducing Points: Adam on support images (and labels) through exact KRR (KIP)",
        build="distillbench_builtin.objectives.kip:build_kip",
        default=True,  # used when a run names no objective
        marker="o",
        defaults={"kernel": "ntk", "loss": "mse"},
        check_data=check_transform,
        learning=True,
        params=(
            Param("steps", int, 300, "number of optimization steps", min=0),
            Param("lr", float, 0.01, "Adam learning rate of the support images and labels", min=0.0, min_open=True),
            Param("learn_labels", bool, False, "also learn the support labels (fixed one-hot otherwise)",
                  role="learns_labels"),
            Param("target_batch", int, 6000,
                  "class-balanced targets per step in total; the whole train set if >= its size", min=1),
            Param("reg", float, 1e-6, "KRR ridge, scaled by tr(K_SS)/|S|", min=0.0, min_open=True, role="ridge"),
            _dtype("float64", "dtype of the kernel computation (the solve is always float64 Cholesky)"),
            _init("uniform [-1, 1] (KIP)"),
            *_options(val_models=1, loss_opt="their own Adam"),
            *_transform(False, "the images' Adam (off by default: KIP's reference has none)"),
        ),
    ),
    Component(
        kind="objective",
        name="ls",
        summary="Label Solve: closed-form labels minimizing the KIP squared loss for real support images",
        build="distillbench_builtin.objectives.label_solve:build_ls",
        marker="s",
        defaults={"kernel": "ntk", "loss": "mse"},
        check=check_ls,
        params=(
            Param("reg", float, 1e-6, "KRR ridge, scaled by tr(K_SS)/|S| (the same as the KIP loss)",
                  min=0.0, min_open=True, role="ridge"),
            _dtype("float64", "dtype of the kernel computation (the solves are float64)"),
            Param("solve_reg", float, 1e-10,
                  "stabilizer of the normal equations, scaled by tr(K_ST K_TS)/|S| (0: none)", min=0.0),
        ),
    ),
    Component(
        kind="objective",
        name="frepo",
        summary="FRePo: LAMB on support images and labels through the kernel of a pool of networks trained "
                "meanwhile (kernel frepo-pool), label margin, optional flips",
        build="distillbench_builtin.objectives.frepo:build_frepo",
        marker="D",
        defaults={"kernel": "frepo-pool", "loss": "mse"},
        learning=True,
        params=(
            Param("steps", int, 600, "number of optimization steps (CPU-sized: ~30 s on digits; the reference: "
                  "500,000)", min=0),
            Param("lr", float, 1e-2, "LAMB learning rate of the support images and labels, cosine-decayed over "
                  "the steps to a tenth of it (CPU-sized for a few hundred steps; the reference: 3e-4)",
                  min=0.0, min_open=True),
            Param("learn_labels", bool, True, "also learn the support labels, with the label-margin term "
                  "(the reference: on)", role="learns_labels"),
            Param("target_batch", int, 1024,
                  "uniformly sampled targets per step; the whole train set if >= its size", min=1),
            Param("reg", float, 1e-6, "KRR ridge, scaled by tr(K_SS)/|S|", min=0.0, min_open=True, role="ridge"),
            _dtype("float32", "dtype of the features and kernel (the solve is always float64 Cholesky)"),
            _init("standard normal"),
            Param("flip", bool, False, "the support and its horizontal mirror images form the kernel's support "
                  "(the reference: on except MNIST/Fashion-MNIST, off at 10+ ipc on CIFAR-100/Tiny ImageNet)"),
            Param("loss_lr", float, 1e-2, "learning rate of the loss's own parameters (platt's log-scale k), "
                  "in their own Adam (0: frozen)", min=0.0),
        ),
    ),
    Component(
        kind="objective",
        name="rfad",
        summary="RFAD: random-feature NNGP KRR, Platt loss, AdaBelief, no gradient through targets "
                "(bare, the kernel is rf-nngp with its default arch fc1, for speed; the paper's is kernel.arch=convnet3)",
        build="distillbench_builtin.objectives.rfad:build_rfad",
        marker="^",
        defaults={"kernel": "rf-nngp", "loss": "platt"},
        check_data=check_transform,
        learning=True,
        params=(
            Param("steps", int, 300, "number of optimization steps", min=0),
            Param("lr", float, 1e-3, "AdaBelief learning rate (eps 1e-16) of the support images and labels",
                  min=0.0, min_open=True),
            Param("target_batch", int, 5120,
                  "uniformly sampled targets per step; the whole train set if >= its size", min=1),
            Param("reg", float, 5e-3, "KRR ridge, scaled by tr(K_SS)/|S|", min=0.0, min_open=True, role="ridge"),
            Param("learn_labels", bool, False, "also learn the support labels (fixed one-hot otherwise)",
                  role="learns_labels"),
            _dtype("float32", "dtype of the features and kernel (the solve is always float64 LU)"),
            _init("standard normal (the RFAD reference)"),
            *_options(val_models=2, loss_opt="the images' AdaBelief (eps 1e-16), as the RFAD reference"),
            *_transform(True, "the images' AdaBelief (on by default: the published RFAD numbers were made with it)"),
        ),
    ),
    Component(
        kind="objective",
        name="rcig",
        summary="RCIG: implicit meta-gradients through a pool of linearised finite networks (kernel rcig-pool): "
                "last layer in closed form, the body by inner Adam steps, a Hessian-inverse product, AdaBelief",
        build="distillbench_builtin.objectives.rcig:build_rcig",
        marker="P",
        defaults={"kernel": "rcig-pool", "loss": "platt"},
        check_data=check_rcig_rows,
        learning=True,
        requires_learning=True,
        params=(
            Param("steps", int, 50, "number of distillation steps (CPU-sized; the reference: 10,000)", min=0),
            Param("lr", float, 0.1, "AdaBelief learning rate of the support images and labels (CPU-sized for "
                  "a few dozen steps; the reference's proto_learning_rate: 3e-3)", min=0.0, min_open=True),
            Param("learn_labels", bool, True, "also learn the support labels (the reference: on)",
                  role="learns_labels"),
            Param("target_batch", int, 1024,
                  "uniformly sampled targets per step; the whole train set if >= its size", min=1),
            Param("l2_rate", float, 5e-4, "ridge of the inner problem per support image: l2 = l2_rate x "
                  "images per class x classes (the reference's l2_rate)", min=0.0, min_open=True),
            Param("inner_steps", int, 20, "Adam steps of the inner problem (the reference's n_inner_steps)", min=0),
            Param("hinv_steps", int, 20, "Adam steps of the Hessian-inverse-vector product (the reference's "
                  "n_hinv_steps)", min=0),
            Param("flip", bool, False, "the support and its horizontal mirror images (the reference's use_flip: "
                  "on for CIFAR, off for MNIST and Fashion-MNIST)"),
            Param("loss_lr", float, 3e-2, "AdaBelief learning rate of the loss's parameters (platt: the "
                  "reference's log-temperature, 0.03)", min=0.0),
            Param("tune", bool, True, "tune the inner and Hessian learning rates before the first step, as the "
                  "reference does (false: start from inner_lr and hvp_lr)"),
            Param("inner_lr", float, 1e-5, "initial learning rate of the inner Adam (adapted every 50 steps)",
                  min=0.0, min_open=True),
            Param("hvp_lr", float, 5e-5, "learning rate of the Hessian-inverse Adam", min=0.0, min_open=True),
            Param("target_chunk", int, 128, "targets per chunk of the outer pass, each chunk's forward "
                  "recomputed in its backward, and rows per chunk of the forward passes without gradient of a "
                  "subsampled support (memory: one chunk's activations alive; the same values but "
                  "for rounding); 0: all at once. Recorded, not part of the run's identity (a memory "
                  "layout, like the exact kernels' blocks)", min=0, identity=False),
            Param("support_rows", int, None, "rows of the support (with its mirror images under flip) that the "
                  "inner, direct, Hessian-inverse and implicit passes differentiate through, the others' features "
                  "constant (the reference's subsampling of large supports: inner_train_batch_size, "
                  "direct_batch_sizes[0], hinv_batch_size, implicit_batch_size; 2000 for CIFAR-100 at 50 ipc); "
                  "0: every row; unset: every row where a pass over them all fits the device, else as many as "
                  "fit (recorded)", min=0, nullable=True, identity="set"),
            Param("target_rows", int, 0, "targets the direct pass differentiates through (the reference's "
                  "direct_batch_sizes[1]); 0: every target", min=0, identity="set"),
            Param("repeats", int, 1, "draws of rows averaged in the direct and implicit gradients (the "
                  "reference's normal_repeats; 2 for CIFAR-100 at 50 ipc)", min=1, identity="set"),
            _init("0.3 x standard normal (the reference's init_random_noise)"),
        ),
    ),
]

"""Built-in evaluators (declarations only; implementations are imported lazily)."""

from distillbench import Component, Metric, Param
from distillbench_builtin.architectures.layout import normalization_problem


COMPONENTS = [
    Component(
        kind="evaluator",
        name="krr",
        summary="test accuracy/MSE of kernel ridge regression on the support set (exact kernel by default)",
        build="distillbench_builtin.evaluators.krr:build_krr",
        default=True,  # used when a run names no evaluator
        params=(
            Param("kernel", str, "nngp", "registered kernel used for evaluation", component="kernel"),
            Param("arch", str, "auto", "architecture of the evaluation kernel; auto = the run kernel's arch "
                  "(not a learning kernel's), else fc1", component="architecture", auto="fc1"),
            Param("reg", float, None, "KRR ridge scaled by tr(K_SS)/|S|; none = the objective's reg, else 1e-6",
                  min=0.0, min_open=True, nullable=True),
            Param("dtype", str, "float64", "dtype of the kernel computation (the solve is float64)",
                  choices=("float64", "float32")),
            Param("b_std", float, None, "bias std of the evaluation kernel; none = the kernel's default (0.1; "
                  "the KIP paper's kernels: 0.01)", min=0.0, nullable=True),
            Param("updates", int, 1000, "a kernel whose networks learn (frepo-pool): updates training them on "
                  "the scored set first (FRePo's evaluation: 1000)", min=0, identity="set"),
        ),
    ),
    Component(
        kind="evaluator",
        name="nn",
        summary="finite-network transfer (RFAD Table 2): SGD-trained finite nets, centering and label scaling",
        build="distillbench_builtin.evaluators.nn:build_nn",
        validate=normalization_problem,
        params=(
            Param("arch", str, "auto", "network architecture (a registered architecture); auto = the run "
                  "kernel's arch (not a learning kernel's), else convnet3", component="architecture", auto="convnet3"),
            Param("width", int, 1024, "channels (convs) or hidden units (fc); the paper uses 1024", min=1),
            Param("steps", int, 1000, "SGD steps on the support set (at most, with val_every; "
                  "RFAD reference: 20000)", min=1),
            Param("lr", float, 1e-3, "SGD learning rate of the reference's loss mean((f - alpha y)^2)/alpha^2 "
                  "over all n*C entries; auto = the best of 1e-4, 3e-4, 1e-3, 3e-3, 1e-2 on a validation "
                  "split of the training data (recorded as eval_lr)", min=0.0, min_open=True, nullable=True),
            Param("momentum", float, 0.9, "SGD momentum", min=0.0, max=1.0),
            Param("optimizer", str, "sgd", "sgd (with momentum; the RFAD reference) or adam (FRePo's and RCIG's "
                  "evaluation)", choices=("sgd", "adam"), identity="set"),
            Param("schedule", str, "constant", "learning-rate schedule: constant, or warmup-cosine (FRePo's: linear "
                  "from 0 over `warmup` steps, then cosine to 1% of lr)", choices=("constant", "warmup-cosine"),
                  identity="set"),
            Param("warmup", int, 500, "with schedule=warmup-cosine: warmup steps (FRePo: 500)", min=0, identity="set"),
            Param("schedule_steps", int, None, "with schedule=warmup-cosine: the steps it spans (none = steps); "
                  "later steps keep its last rate (RCIG's evaluation trains 2.5x its schedule without augmentation)",
                  min=1, nullable=True, identity="set"),
            Param("loss", str, "mse", "training loss: mse (the RFAD reference's, with label_scale) or cross-entropy "
                  "(soft-max; fixed labels' classes, or label rows that are distributions; the KIP paper's MNIST "
                  "transfer)", choices=("mse", "cross-entropy"), identity="set"),
            Param("mirror", bool, False, "train on the set and its mirror images, labels repeated (RCIG's "
                  "use_flip, on CIFAR at 1 and 10 ipc)", identity="set"),
            Param("ema", float, 0.0, "score the parameters' exponential moving average with this decay, debiased "
                  "(FRePo: 0.995); 0 = the parameters themselves", min=0.0, max=0.9999, identity="set"),
            Param("label_scale", float, 2.0, "alpha: loss |f - alpha y|^2 / alpha^2, outputs divided by alpha "
                  "(loss=mse only)",
                  min=0.0, min_open=True),
            Param("centering", bool, True, "train f(x) - f_init(x) instead of f(x)"),
            Param("seeds", int, 3, "independently initialised networks; accuracy is their mean +- std", min=1),
            Param("eval_batch", int, 500, "test images per forward chunk (bounds memory)", min=1),
            Param("val_every", int, 0, "early stopping: validation accuracy every k steps, best network kept "
                  "(0: off; RFAD reference: 100)", min=0),
            Param("patience", int, 500, "with val_every: stop this many steps after the best validation accuracy",
                  min=1),
            Param("val_per_class", int, None, "with val_every: training images per class to validate on; "
                  "none = the reference's 500 (10 classes) or 100", min=1, nullable=True),
            Param("augment", str, "none", "augmentation of the support at each SGD step: none (the RFAD reference), "
                  "flip, dsa (DSA's color_crop_cutout_flip_scale_rotate, one family per step, per-image draws), or "
                  "the references' augmax: frepo (a family per batch) or rcig (per image); 1-channel images get "
                  "no flip and, with rcig, no color", choices=("none", "flip", "dsa", "frepo", "rcig"), identity="set"),
            Param("batch", int, None, "images per SGD step: none = the whole support set (the RFAD reference; "
                  "on the whole training split, for recovery: 256); n = a fresh random minibatch of n each step "
                  "(RCIG, DC: 256), the whole set when it has at most n", min=1, nullable=True, identity="set"),
            Param("normalization", str, "none", "normalization of the network (the architecture's network; "
                  "none on an architecture with an infinite-width form: the RFAD reference's trunk + readout); "
                  "batch: running averages in evaluation", choices=("none", "instance", "batch"), identity="set"),
        ),
    ),
    Component(
        kind="evaluator",
        name="privacy",
        summary="privacy of a (corrupted) set: distance of each support image to its nearest training image, "
                "a loss-threshold membership-inference attack on its KRR model, and its KRR accuracy",
        build="distillbench_builtin.evaluators.privacy:build_privacy",
        params=(
            Param("kernel", str, "nngp", "registered kernel of the attacked KRR model", component="kernel"),
            Param("arch", str, "auto", "its architecture; auto = the run kernel's arch (not a learning "
                  "kernel's), else fc1",
                  component="architecture", auto="fc1"),
            Param("reg", float, None, "KRR ridge scaled by tr(K_SS)/|S|; none = the objective's reg, else 1e-6",
                  min=0.0, min_open=True, nullable=True),
            Param("samples", int, 1000, "training images (members) and as many test images (non-members) the "
                  "attack scores", min=2),
            Param("b_std", float, None, "bias std of the kernel; none = the kernel's default", min=0.0,
                  nullable=True),
        ),
        metrics=(
            # mean distance of a support image to its nearest training image, over a typical one's
            Metric("nn_dist_rel", "nearest train", "ratio", higher_is_better=True),
            # accuracy of the membership-inference attack (0.5: it learns nothing)
            Metric("mia_acc", "MIA", "percent", higher_is_better=False),
        ),
    ),
]

"""Built-in datasets (declarations only; implementations are imported lazily)."""

from distillbench import Component, Param
from distillbench_builtin.datasets.catalog import DATA_DIR_ENV, availability_problem, checksum_problem

_PREPROCESSING = ("standardize", "zca", "zca-layernorm", "zca-kip", "zca-features", "none")

_SPLIT_PARAMS = (
    Param("test_fraction", float, 0.2, "fraction of each class held out as the test split", min=0.0, min_open=True, max=0.9),
    Param("split_seed", int, 0, "seed of the fixed class-stratified train/test split (not the run seed)", min=0,
          max=Param.SEED_MAX),
    Param("standardize", bool, True, "channel-wise standardization with train-split statistics"),
)

def _real_params(default_preprocess: str) -> tuple[Param, ...]:
    return (
        Param("data_dir", str, None, f"folder holding the dataset's subfolder; none = ${DATA_DIR_ENV} or "
              "~/.cache/distillbench/data", nullable=True, identity=False),
        Param("preprocess", str, default_preprocess, "standardize (channel-wise), zca (the RFAD reference's), "
              "zca-layernorm (RFAD's SVHN), zca-kip (layer norm + per-feature ZCA, KIP-ConvNet), zca-features "
              "(per-feature ZCA) or none; fitted on train only", choices=_PREPROCESSING),
        Param("zca_reg", float, 0.1, "ZCA regularization: eps = zca_reg * tr(cov) / d", min=0.0, min_open=True),
        Param("verify", bool, True, "refuse data files whose md5 is not the official one; false uses them anyway "
              "(recorded with each run)", identity=False),
    )


def _available(name: str):
    def validate(params):
        problem = availability_problem(name, params.get("data_dir"))
        if problem is None and params.get("verify", True):
            problem = checksum_problem(name, params.get("data_dir"))
        return problem

    return validate


def _described(function: str, *args):
    """A lazy ``describe``: its module (numpy, file readers) is imported only when a run plans."""

    def describe(params):
        from distillbench_builtin.datasets import metadata

        target = getattr(metadata, function)
        return (target(*args) if args else target)(params)

    return describe


#: Most float32 values ``synthetic`` generates (8 GiB): more is a typo, not a smoke test.
_SYNTHETIC_MAX_VALUES = 2**31


def _synthetic_problem(params):
    if params["n_train"] < params["num_classes"]:
        return (f"n_train={params['n_train']} is below num_classes={params['num_classes']}: every class needs "
                f"a training example; set dataset.n_train >= {params['num_classes']}")
    values = (params["n_train"] + params["n_test"]) * params["height"] * params["width"] * params["channels"]
    if values > _SYNTHETIC_MAX_VALUES:
        return (f"{params['n_train']}+{params['n_test']} images of {params['height']}x{params['width']}x"
                f"{params['channels']} are {values:.3g} values, more than {_SYNTHETIC_MAX_VALUES:.3g} (8 GiB); "
                "choose smaller sizes")
    return None


COMPONENTS = [
    Component(
        kind="dataset",
        name="digits",
        summary="scikit-learn's 1,797 handwritten digits (8x8x1, 10 classes), embedded: the default",
        build="distillbench_builtin.datasets.digits:build_digits",
        default=True,  # used when a run names no dataset
        params=_SPLIT_PARAMS,
        describe=_described("describe_digits"),
    ),
    Component(
        kind="dataset",
        name="synthetic",
        summary="Gaussian class prototypes plus noise, any shape: for tests and smoke runs",
        build="distillbench_builtin.datasets.synthetic:build_synthetic",
        params=(
            Param("n_train", int, 500, "number of training examples (classes cycle)", min=1),
            Param("n_test", int, 200, "number of test examples", min=1),
            Param("num_classes", int, 10, "number of classes", min=2),
            Param("height", int, 8, "image height", min=1),
            Param("width", int, 8, "image width", min=1),
            Param("channels", int, 1, "image channels", min=1),
            Param("noise", float, 1.0, "std of the per-pixel noise around each class prototype", min=0.0),
            Param("data_seed", int, 0, "seed of the generated data (not the run seed)", min=0,
                  max=Param.SEED_MAX),
        ),
        validate=_synthetic_problem,
        describe=_described("describe_synthetic"),
    ),
    *[
        Component(
            kind="dataset",
            name=name,
            summary=summary,
            build=f"distillbench_builtin.datasets.real:build_{name.replace('-', '_')}",
            params=_real_params(default_preprocess) + extra,
            validate=_available(name),
            describe=_described("describe_mnist_t10k") if name == "mnist-t10k" else _described("describe_real", name),
        )
        for name, summary, default_preprocess, extra in [
            ("mnist", "MNIST, official 60k/10k split (IDX files in <data_dir>/mnist/)", "standardize", ()),
            ("fashion-mnist", "Fashion-MNIST, official 60k/10k split (IDX files in <data_dir>/fashion-mnist/)",
             "standardize", ()),
            ("kmnist", "Kuzushiji-MNIST, official 60k/10k split (IDX or .npz files in <data_dir>/kmnist/)",
             "standardize", ()),
            ("cifar10", "CIFAR-10, official 50k/10k split (python batches in <data_dir>/cifar10/)", "zca", ()),
            ("cifar100", "CIFAR-100 fine labels, official 50k/10k split (<data_dir>/cifar100/)", "zca", ()),
            ("svhn", "SVHN cropped digits, official train/test .mat files (<data_dir>/svhn/)", "zca", ()),
            ("mnist-t10k",
             "the 10,000 official MNIST test images split into fixed class-balanced train/test (8,000/2,000)",
             "standardize",
             (Param("test_per_class", int, 200, "held-out test images per class (the rest is train)", min=1),
              Param("split_seed", int, 0, "seed of the fixed class-balanced split (not the run seed)", min=0,
                    max=Param.SEED_MAX))),
        ]
    ],
]


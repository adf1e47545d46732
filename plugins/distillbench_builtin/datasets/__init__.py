"""Built-in datasets (declarations only; implementations are imported lazily)."""

from distillbench import Component, Param

_SPLIT_PARAMS = (
    Param("test_fraction", float, 0.2, "fraction of each class held out as the test split", min=0.0, min_open=True, max=0.9),
    Param("split_seed", int, 0, "seed of the fixed class-stratified train/test split (not the run seed)", min=0),
    Param("standardize", bool, True, "channel-wise standardization with train-split statistics"),
)

COMPONENTS = [
    Component(
        kind="dataset",
        name="digits",
        summary="scikit-learn's 1,797 handwritten digits (8x8x1, 10 classes), embedded: the default",
        build="distillbench_builtin.datasets.digits:build_digits",
        params=_SPLIT_PARAMS,
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
            Param("data_seed", int, 0, "seed of the generated data (not the run seed)", min=0),
        ),
    ),
]

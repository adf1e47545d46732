"""The dataset contract (``distillbench.components.datasets``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distillbench.components.datasets import DataSplit, check_datasplit
from distillbench.testing._base import build


def check_dataset(dataset: Any, params: Mapping[str, Any] | None = None) -> DataSplit:
    """Check a dataset component (or a built ``DataSplit``); raise ``ConformanceError`` (``dataset contract: ...``).

    * ``build`` returns a ``DataSplit`` that ``check_datasplit`` accepts (float32 NHWC images,
      integer labels in ``[0, num_classes)``, every class in the training split, same image shape
      in both splits); ``num_classes`` is an int >= 2; the images are finite;
    * building it twice gives the same arrays (the split is fixed by the dataset's own parameters).

    Pass small ``params`` for large datasets. Returns the built ``DataSplit``.
    """
    split, s = build(dataset, "dataset", params, DataSplit)
    n = split.num_classes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise s.fail(f"num_classes must be an int >= 2, got {n!r}")
    for part in split[:4]:
        if not isinstance(part, np.ndarray):
            raise s.fail(f"the splits must be numpy arrays (host data), got {type(part).__name__}")
    try:
        check_datasplit(split, s.component.name if s.component is not None else "dataset")
    except ValueError as exc:
        raise s.fail(str(exc)) from None
    for part in ("x_train", "x_test"):
        if not np.all(np.isfinite(getattr(split, part))):
            raise s.fail(f"{part} has non-finite values")
    if s.component is not None:
        again, _ = build(s.component, "dataset", params, DataSplit, check_declaration=False)
        for part, a, b in zip(DataSplit._fields, split, again):
            if part != "num_classes" and not np.array_equal(a, b):
                raise s.fail(f"building twice with the same parameters must give the same split ({part} differs)")
    return split

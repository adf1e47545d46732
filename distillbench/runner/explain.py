"""Explain a distilled set through its KRR predictor (RFAD's interpretability view): ``distillbench explain``.

KRR predicts ``f(x) = Σ_s K(x, s) α_s`` with ``α = (K_SS + λI)^-1 y_S``. So for a test image the
support images that drive its predicted class ``c`` are those with the largest
``K(x, s) · α_s[c]`` (their terms of the sum), and for a support image the training images that
look most like it *to the kernel* are those nearest in the kernel's feature space,
``d(s, x)² = K(s, s) + K(x, x) − 2 K(s, x)``. The kernel is the one that evaluated the run
(``eval_kernel``/``eval_arch`` as stored, its ridge ``eval_reg``), with the krr evaluator's key
stream and default ridge (imported from it, their one owner), so a random-feature kernel draws
the same sample it was scored with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from distillbench.records import Artifact
from distillbench.registry import Registry

DIAG_BLOCK = 64  # images per block when computing K(x, x) for the training images


@dataclass
class Explanation:
    run_id: str
    label: str
    kernel: str
    arch: str | None
    reg: float
    num_classes: int
    support_images: np.ndarray
    support_labels: np.ndarray
    test_x: np.ndarray
    test_index: np.ndarray
    test_labels: np.ndarray
    test_pred: np.ndarray
    test_top: np.ndarray  # (T, k) support indices, largest contribution to the predicted class first
    test_contrib: np.ndarray  # (T, k) those contributions
    train_x: np.ndarray  # the training images that appear as neighbours
    neighbours: np.ndarray  # (S, m) indices into the training split, nearest first
    neighbour_dist: np.ndarray  # (S, m) kernel feature-space distances
    train_labels: np.ndarray  # labels of the whole training split

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "distillbench.explain", "version": 1, "run_id": self.run_id, "run": self.label,
            "kernel": self.kernel, "arch": self.arch, "reg": self.reg,
            "method": "test: support images by K(x, s)·alpha_s[predicted class], largest first; support: "
                      "training images by kernel feature-space distance sqrt(K(s,s) + K(x,x) - 2K(s,x)), nearest "
                      "first",
            "tests": [
                {"test_index": int(i), "label": int(y), "predicted": int(p),
                 "support": [{"index": int(s), "label": int(self.support_labels[s]), "contribution": float(c)}
                             for s, c in zip(top, contrib)]}
                for i, y, p, top, contrib in zip(self.test_index, self.test_labels, self.test_pred, self.test_top,
                                                 self.test_contrib)
            ],
            "support": [
                {"index": s, "label": int(self.support_labels[s]),
                 "nearest_train": [{"train_index": int(t), "label": int(self.train_labels[t]), "distance": float(d)}
                                   for t, d in zip(self.neighbours[s], self.neighbour_dist[s])]}
                for s in range(len(self.support_labels))
            ],
        }


class ExplainError(ValueError):
    """The stored run cannot be explained as it was scored (bad input: one line, exit 2)."""


def explain(record, artifact: Artifact, registry: Registry, tests: int = 8, top: int = 5,
            neighbours: int = 5, train_limit: int = 2000) -> Explanation:
    """Explain the stored run ``record`` (its ``artifact``).

    Raises :class:`ExplainError` (one line) when the run's data no longer loads or changed since
    the run (its fingerprint: the page would explain other data than the run was scored on), when
    the artifact holds no usable support set, or when its evaluation kernel cannot be rebuilt.
    """
    from distillbench.runner.pipeline import enable_float64

    enable_float64()
    import jax
    import jax.numpy as jnp

    from distillbench.krr import EVAL_STREAM, krr_fit
    from distillbench.runner.plan import with_arch

    data = _run_data(record, registry)
    xs, ys, support_labels = _support(record.run_id, artifact, data)
    kernel_name, arch, reg, kernel, loss = _evaluation_kernel(record, registry)
    key = jax.random.fold_in(jax.random.PRNGKey(record.config.seed), EVAL_STREAM)
    n_test = len(data.y_test)
    test_index = np.unique(np.linspace(0, n_test - 1, num=min(tests, n_test)).round().astype(int))
    x_test = jnp.asarray(data.x_test[test_index], dtype=jnp.float64)

    k_ss = kernel.kernel_fn(xs, xs, key)
    alpha = np.asarray(krr_fit(k_ss, ys, reg))
    k_ts = np.asarray(kernel.kernel_fn(x_test, xs, key), dtype=np.float64)
    pred = k_ts @ alpha
    predicted = np.asarray(jnp.argmax(loss.logits(loss.init(), jnp.asarray(pred)), axis=-1))
    contrib = k_ts * alpha[:, predicted].T  # (T, S): each support image's term for the predicted class
    k = min(top, xs.shape[0])
    test_top = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    test_contrib = np.take_along_axis(contrib, test_top, axis=1)

    n_train = len(data.y_train)
    train_index = np.unique(np.linspace(0, n_train - 1, num=min(train_limit, n_train)).round().astype(int))
    x_train = jnp.asarray(data.x_train[train_index], dtype=jnp.float64)
    k_xs = np.asarray(kernel.kernel_fn(x_train, xs, key), dtype=np.float64)
    k_xx = np.concatenate([np.diag(np.asarray(kernel.kernel_fn(block, block, key)))
                           for block in _blocks(x_train, DIAG_BLOCK)])
    dist2 = np.diag(np.asarray(k_ss))[None, :] + k_xx[:, None] - 2.0 * k_xs  # (X, S)
    dist = np.sqrt(np.maximum(dist2, 0.0)).T  # (S, X)
    m = min(neighbours, len(train_index))
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :m]
    return Explanation(
        run_id=record.run_id, label=with_arch(record.config, registry).label(), kernel=kernel_name, arch=arch,
        reg=float(reg),
        num_classes=int(data.num_classes), support_images=np.asarray(artifact.support.x),
        support_labels=support_labels,
        test_x=np.asarray(data.x_test[test_index]), test_index=test_index,
        test_labels=np.asarray(data.y_test[test_index]), test_pred=predicted, test_top=test_top,
        test_contrib=test_contrib, train_x=np.asarray(data.x_train), neighbours=train_index[nearest],
        neighbour_dist=np.take_along_axis(dist, nearest, axis=1), train_labels=np.asarray(data.y_train),
    )


def _run_data(record, registry: Registry):
    """The run's dataset, refused when it no longer loads or is not the data the run was scored on."""
    from distillbench.runner.pipeline import DataCache, load_data

    name = record.config.dataset.name
    try:
        loaded = load_data(record.config, registry, DataCache())
    except Exception as exc:  # a missing data directory, a changed file, a bad stored parameter
        raise ExplainError(f"run {record.run_id}: its dataset {name} cannot be loaded ({_first_line(exc)}); "
                           f"restore its files or pass the store the run was made with") from None
    if record.data_fingerprint is not None and record.data_fingerprint != loaded.fingerprint:
        raise ExplainError(f"run {record.run_id}: the {name} data changed since the run (fingerprint "
                           f"{record.data_fingerprint[:12]} -> {loaded.fingerprint[:12]}); a page would explain "
                           f"other data than the run was scored on: restore the data, or re-run it with "
                           f"`distillbench run --force`")
    return loaded.data


def _support(run_id: str, artifact: Artifact, data):
    """``(x, label rows, class of each image)`` of the artifact, checked against the run's data."""
    import jax.numpy as jnp

    if artifact.support is None:
        raise ExplainError(f"run {run_id}: its artifact holds no support set; re-run it with "
                           f"`distillbench run --force`")
    x, y = artifact.support.x, artifact.support.y
    shape, c = tuple(data.x_train.shape[1:]), int(data.num_classes)
    if x.ndim < 2 or tuple(x.shape[1:]) != shape or x.shape[0] == 0 or y.shape != (x.shape[0], c):
        raise ExplainError(f"run {run_id}: its artifact's support images {tuple(x.shape)} and labels "
                           f"{tuple(y.shape)} do not fit the dataset (images {shape}, {c} classes); re-run it")
    if x.dtype.kind not in "iuf" or y.dtype.kind not in "iuf" or not (np.all(np.isfinite(x))
                                                                      and np.all(np.isfinite(y))):
        raise ExplainError(f"run {run_id}: its artifact's support set holds non-numeric, NaN or infinite values")
    classes = artifact.support.classes  # a set made elsewhere that stated its classes
    if classes is None or classes.shape != (x.shape[0],) or classes.dtype.kind not in "iu":
        classes = np.argmax(y, axis=1)
    return jnp.asarray(x, dtype=jnp.float64), jnp.asarray(y), np.asarray(classes)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _evaluation_kernel(record, registry: Registry):
    """``(name, arch, reg, kernel, loss)``: what the run's evaluator reported it used (``eval_kernel``,
    ``eval_arch``, ``eval_reg``). Rows stored before evaluators reported them fall back to what the
    evaluators declare: its parameters naming a kernel and an architecture as its builder takes
    them (``plan.builder_params``: ``auto`` resolved by the one rule), else the default evaluator's
    declared kernel (an evaluator without one, e.g. ``nn``); the ridge to the objective's declared
    one (``Param(role="ridge")``), else the core KRR's default."""
    from distillbench.krr import DEFAULT_REG
    from distillbench.runner.pipeline import declared_ridge, make_kernel

    config, metrics = record.config, record.metrics
    reg = metrics.eval_reg or declared_ridge(registry, config.objective) or DEFAULT_REG
    name, arch, extra = metrics.eval_kernel, metrics.eval_arch, {}
    try:
        declared_kernel, declared_arch, extra = _declared_evaluation(config, registry)
        name, arch = name or declared_kernel, arch or declared_arch
        if not isinstance(reg, (int, float)) or isinstance(reg, bool) or not 0 < reg < float("inf"):
            raise ValueError(f"eval_reg {reg!r} is not a positive number")
        if name is None:
            raise ValueError("no installed evaluator declares a kernel to explain it with")
        kernel = make_kernel(registry, str(name), {**extra, **_arch_param(registry, str(name), arch)})
        loss = registry.instantiate("loss", config.loss.name, config.loss.as_dict())
    except Exception as exc:  # a stored name or parameter this installation cannot build
        raise ExplainError(f"run {record.run_id}: cannot rebuild what evaluated it ({name}({arch}), loss "
                           f"{config.loss.name}): {_first_line(exc)}") from None
    return name, arch, float(reg), kernel, loss


def _declared_evaluation(config, registry: Registry):
    """``(kernel, arch, extra)`` from the run evaluator's declared references, as its builder takes them
    (else the default evaluator's kernel reference), and its other parameters the kernel declares too
    and that are set (``b_std``)."""
    from distillbench.runner.plan import builder_params, default_component

    if config.evaluator.name not in registry.names("evaluator"):
        return None, None, {}
    params = builder_params(config.evaluator, config, registry)
    declared = registry.get("evaluator", config.evaluator.name).params
    kernel = next((params.get(p.name) for p in declared if p.component == "kernel"), None)
    arch = next((params.get(p.name) for p in declared if p.component == "architecture"), None)
    if kernel is None:
        fallback = registry.get("evaluator", default_component(registry, "evaluator")).params
        kernel = next((p.default for p in fallback if p.component == "kernel"), None)
    if kernel is None or kernel not in registry.names("kernel"):
        return kernel, arch, {}
    shared = {p.name for p in registry.get("kernel", kernel).params if p.component is None}
    extra = {p.name: params[p.name] for p in declared
             if p.component is None and p.name in shared and p.nullable and params.get(p.name) is not None}
    return kernel, arch, extra


def _arch_param(registry: Registry, kernel: str, arch) -> dict:
    """``arch`` under the name of ``kernel``'s parameter declared as naming an architecture."""
    if kernel not in registry.names("kernel") or arch is None:
        return {}
    return {p.name: arch for p in registry.get("kernel", kernel).params if p.component == "architecture"}


def _blocks(x, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start:start + size]

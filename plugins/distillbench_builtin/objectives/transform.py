"""The learned support transform: a support parameterisation any gradient objective can use.

The RFAD reference (``yolky/RFAD``, ``distillation.distill_dataset``) learns, besides the images
(and labels), an identity-initialised ``d × d`` matrix ``T`` (``d = H·W·C``) in the images'
optimizer at its own learning rate (AdaBelief, 5e-5), and every kernel it computes, in training
and in validation, sees ``X @ T`` reshaped back to images (``data.transform_data``); corruption ρ
is applied after the transform (``corrupt_data``: frozen pixels keep the *initial* images'
values) and the set it saves is the transformed one. The RFAD paper does not mention it; from the
same start on MNIST at 1 ipc it is worth about 10 points (issue 33). Here it is what the support
set *is* (``support_images``): what the loss, validation, the stored set, ``evaluate``,
``explain``, privacy and the ``nn`` evaluator see. Labels are not transformed.

The reference flattens NCHW images; distillbench's are NHWC. ``X @ T`` is the same map up to a
fixed permutation of ``T``'s rows and columns, which the identity start is invariant to, and the
optimizer is elementwise: the learned sets correspond exactly.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

#: The RFAD reference's learning rate of ``transform_mat`` (its own AdaBelief parameter group).
REFERENCE_LR = 5e-5
#: float32 copies of ``T`` a run holds: T, its gradient, the optimizer's two moments, the update
#: and, under model selection, the best T so far.
COPIES, SELECTION_COPIES = 5, 1


class SupportTransform(NamedTuple):
    """A learned ``d × d`` linear map of the flattened support images, moved at ``lr`` by the
    objective's own optimizer family (AdaBelief under ``rfad``, Adam under ``kip``)."""

    lr: float = REFERENCE_LR


def identity(image_shape) -> Any:
    """``T`` at its start: the ``d × d`` identity in float32 (the support starts as it is)."""
    import jax.numpy as jnp  # here, not at the top: the plan-time check below is JAX-free

    return jnp.eye(math.prod(image_shape), dtype=jnp.float32)


def apply(x, t):
    """``X_flat @ T`` reshaped back to images (``data.transform_data``); ``X @ I`` is ``X`` exactly."""
    import jax
    import jax.numpy as jnp

    flat = x.reshape(x.shape[0], -1)
    return jnp.matmul(flat, t.astype(flat.dtype), precision=jax.lax.Precision.HIGHEST).reshape(x.shape)


def support_images(x, t, movable=None, anchor=None):
    """The support images as every kernel sees them: ``X @ T``, then corruption ρ as the reference's
    ``corrupt_data``: where ``movable`` is 0 the pixel is the initial image's (``anchor``)."""
    out = apply(x, t)
    if movable is None:
        return out
    return movable * out + (1 - movable) * anchor


def memory_bytes(image_shape, selection: bool) -> int:
    """Bytes the transform holds: ``COPIES`` float32 ``d × d`` matrices (one more under selection)."""
    d = math.prod(int(n) for n in image_shape)
    return 4 * d * d * (COPIES + (SELECTION_COPIES if selection else 0))


def _machine_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fit_problem(params, image_shape, machine_bytes: int | None = None) -> str | None:
    """Why ``objective.transform=true`` cannot fit for images of ``image_shape`` (one line), or None.

    JAX-free, at plan time: the ``d × d`` matrices against this machine's physical memory.
    """
    if not params.get("transform") or image_shape is None:
        return None
    machine = _machine_bytes() if machine_bytes is None else machine_bytes
    need = memory_bytes(image_shape, int(params.get("val_every") or 0) > 0)
    if machine is None or need <= machine:
        return None
    d = math.prod(int(n) for n in image_shape)
    return (f"objective.transform=true learns a {d}x{d} matrix for {'x'.join(map(str, image_shape))} images: "
            f"{need / 2**30:.1f} GiB (T, its gradient, the optimizer's moments), more than this machine's "
            f"{machine / 2**30:.1f} GiB; set objective.transform=false")

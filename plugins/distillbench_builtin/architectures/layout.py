"""The layouts of the built-in architectures and their shape rules (no JAX: the fast kernels and
the networks share them).

A layout is (fully connected hidden layers, leading Conv+Relu blocks without pooling,
Conv+Relu+Pool blocks): 3x3 SAME convolutions, 2x2 stride-2 VALID average pooling.
"""

from __future__ import annotations

import math

LAYOUTS = {
    "fc1": (1, 0, 0),
    "fc3": (3, 0, 0),
    "convnet3": (0, 0, 3),
    "convnet": (0, 1, 3),
}


#: DC's networks (``architectures/transfer.py``) and the normalizations each has in the reference.
TRANSFER_NORMALIZATIONS = {
    "convnet-dc": ("none", "instance", "batch"),
    "alexnet": ("none", "batch"),
    "vgg11": ("instance", "batch"),
    "resnet18": ("instance", "batch"),
}


def layout(arch: str) -> tuple[int, int, int]:
    try:
        return LAYOUTS[arch]
    except KeyError:
        raise ValueError(f"unknown built-in architecture {arch!r} (choose from: {', '.join(LAYOUTS)})") from None


def normalization_problem(params) -> str | None:
    """A component's ``validate`` (the ``nn`` evaluator, the ``frepo-pool`` kernel): why its ``arch``,
    a built-in fully connected one, cannot take its ``normalization`` (no instance normalization: a
    vector has no spatial axis) or one of DC's networks lacks it in the reference, or ``None``; before
    any compute. Other architectures refuse what
    their ``network`` does not offer when it is built."""
    arch, normalization = params.get("arch"), params.get("normalization")
    if normalization == "instance" and arch in LAYOUTS and not LAYOUTS[arch][2]:
        return f"normalization=instance: {arch}'s network has no instance normalization (choose from: none, batch)"
    offered = TRANSFER_NORMALIZATIONS.get(arch, (normalization,))
    if normalization is not None and normalization not in offered:
        return (f"normalization={normalization}: {arch}'s network has no normalization {normalization!r} "
                f"(choose from: {', '.join(offered)})")
    return None


def is_conv(arch: str) -> bool:
    """Whether ``arch`` is convolutional (its exact kernel costs (H*W)^2 per image pair)."""
    return layout(arch)[2] > 0


def check_image_shape(arch: str, shape) -> None:
    """Raise ``ValueError`` when NHWC ``shape`` cannot go through ``arch`` (too small to pool)."""
    if len(shape) != 4:
        raise ValueError(f"{arch}: expected NHWC images (n, H, W, C), got shape {tuple(shape)}")
    pools = layout(arch)[2]
    h, w = shape[1], shape[2]
    for i in range(pools):
        if h < 2 or w < 2:
            raise ValueError(
                f"{arch}: images of {shape[1]}x{shape[2]} are too small for its {pools} 2x2 "
                f"average pools (pool {i + 1} would get {h}x{w}; need at least {2**pools}x{2**pools})"
            )
        h, w = h // 2, w // 2


def trunk_features(arch: str, width: int, image_shape) -> int:
    """F, the number of trunk features per image of NHWC ``image_shape`` (without batch)."""
    check_image_shape(arch, (1, *image_shape))
    n_dense, _, n_pool_conv = layout(arch)
    if n_dense:
        return width
    h, w = image_shape[0], image_shape[1]
    for _ in range(n_pool_conv):
        h, w = h // 2, w // 2
    return width * h * w


def pixel_pairs(arch: str, image_shape) -> int:
    """Spatial covariance entries per image pair in the exact kernel: (H*W)^2 for convs, else 1."""
    if not is_conv(arch):
        return 1
    return int(math.prod(image_shape[:2])) ** 2

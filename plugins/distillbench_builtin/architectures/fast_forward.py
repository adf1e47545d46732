"""A fast forward pass of the built-in trunks for XLA on CPU (the ``trunk_apply`` of the built-in
architectures): the same function as the flax ``Trunk`` for its parameters, written for speed.

* the first conv (few input channels) is a handful of broadcast multiply-adds fused with its
  bias, ReLU and 2x2 pooling into one loop over the pooled output: the full-resolution
  activation (memory-bound: ~45% of the time in the reference, ~1% of the flops) is never stored;
* pooling is the mean of 4 strided slices (fused with the ReLU), not a reduce-window;
* a conv followed by a VALID pool computes only the rows/columns the pool reads (7x7 -> 6x6 for
  the last convnet3 conv on 28x28: 27% fewer flops there), identical results.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from distillbench_builtin.architectures.layout import layout

_DN = ("NHWC", "HWIO", "NHWC")

#: Up to this many input channels, a conv is written as fused multiply-adds instead of a library
#: convolution (which is memory-bound and slow for, e.g., 1-channel images).
FUSED_CONV_MAX_CHANNELS = 4


def _library_conv(h, kernel, pad):
    if h.dtype == jnp.float64:
        return _patch_conv(h, kernel, pad)
    return jax.lax.conv_general_dilated(h, kernel, (1, 1), pad, dimension_numbers=_DN)


def _patch_conv(h, kernel, pad):
    """The 3x3 conv as one matmul of shifted slices (3x3xC patches) with the kernel.

    Used for float64: jitted float64 convolutions crashed XLA:CPU in jaxlib 0.8-0.10 on the
    reference CPU (SPEC §8); slices, a matmul and (backward) pads and adds do not convolve.
    """
    hp = jnp.pad(h, ((0, 0), *pad, (0, 0)))
    hout, wout = hp.shape[1] - 2, hp.shape[2] - 2
    patches = jnp.concatenate([hp[:, dh:dh + hout, dw:dw + wout] for dh in range(3) for dw in range(3)], axis=3)
    return jnp.einsum("nyxk,ko->nyxo", patches, kernel.reshape(-1, kernel.shape[-1]))


def _tap_conv(h, kernel, pad):
    """The 3x3 conv as 9·C broadcast multiply-adds (fused by XLA with what follows)."""
    hp = jnp.pad(h, ((0, 0), *pad, (0, 0)))
    hout, wout = hp.shape[1] - 2, hp.shape[2] - 2
    z = 0
    for dh in range(3):
        for dw in range(3):
            for c in range(h.shape[3]):
                z = z + hp[:, dh:dh + hout, dw:dw + wout, c:c + 1] * kernel[dh, dw, c]
    return z


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _few_channel_conv(h, kernel, pad):
    """``_tap_conv`` with a hand-written backward.

    Reverse mode through the multiply-adds is ~100x slower than their forward on CPU (9·C
    reductions over the output channels, then pads and adds), and the library's transposed
    convolution to C = 1 channel is memory-bound too. The input gradient here is one matmul over
    the output channels (``u = g·kernelᵀ``, all taps at once) and 9 shifted adds of ``u``.
    """
    return _tap_conv(h, kernel, pad)


def _few_channel_conv_fwd(h, kernel, pad):
    return _tap_conv(h, kernel, pad), (h, kernel)


def _few_channel_conv_bwd(pad, residuals, g):
    h, kernel = residuals
    (top, _), (left, _) = pad
    n, hin, win, _ = h.shape
    hout, wout = g.shape[1], g.shape[2]
    u = jnp.einsum("nyxo,abco->nyxabc", g, kernel, precision=jax.lax.Precision.HIGHEST)
    # Input position (y + dh, x + dw) of the padded image received u[y, x, dh, dw].
    grad_padded = sum(jnp.pad(u[:, :, :, dh, dw], ((0, 0), (dh, 2 - dh), (dw, 2 - dw), (0, 0)))
                      for dh in range(3) for dw in range(3))
    grad_h = grad_padded[:, top:top + hin, left:left + win]
    hp = jnp.pad(h, ((0, 0), *pad, (0, 0)))
    grad_kernel = jnp.stack([jnp.stack([
        jnp.einsum("nyxc,nyxo->co", hp[:, dh:dh + hout, dw:dw + wout], g, precision=jax.lax.Precision.HIGHEST)
        for dw in range(3)]) for dh in range(3)])
    return grad_h, grad_kernel


_few_channel_conv.defvjp(_few_channel_conv_fwd, _few_channel_conv_bwd)


def _conv_block(h, kernel, bias, pool: bool):
    """Conv(3x3, SAME) + bias + ReLU (+ 2x2 stride-2 VALID average pool), NHWC."""
    hin, win, cin = h.shape[1:]
    # Rows/columns of the conv output that are used: all, or those the VALID pool reads.
    hout, wout = (2 * (hin // 2), 2 * (win // 2)) if pool else (hin, win)
    pad = ((1, hout + 1 - hin), (1, wout + 1 - win))  # SAME, cropped to the rows used
    conv = _few_channel_conv if cin <= FUSED_CONV_MAX_CHANNELS else _library_conv
    a = jax.nn.relu(conv(h, kernel, pad) + bias)
    if not pool:
        return a
    n, c = a.shape[0], a.shape[3]

    def quarter(r, s):  # strided slice (a gather if written with jnp indexing)
        return jax.lax.slice(a, (0, r, s, 0), (n, hout, wout, c), (1, 2, 2, 1))

    return (quarter(0, 0) + quarter(1, 0) + quarter(0, 1) + quarter(1, 1)) * 0.25


def trunk_forward(arch: str, params, x):
    """The flax ``Trunk(arch)`` forward pass for its ``params``, written for speed; (n, F)."""
    n_dense, n_plain, n_pool = layout(arch)
    layers = params["params"]
    if n_dense:
        h = x.reshape(x.shape[0], -1)
        for i in range(n_dense):
            layer = layers[f"Dense_{i}"]
            h = jax.nn.relu(h @ layer["kernel"] + layer["bias"])
        return h
    h = x
    for i in range(n_plain + n_pool):
        layer = layers[f"Conv_{i}"]
        h = _conv_block(h, layer["kernel"], layer["bias"], pool=i >= n_plain)
        # Each block's output is stored once: left to itself, XLA fuses a block's ReLU and
        # pooling into the next one's padding and slower loops (convnet3, 32 channels, 1280
        # images: 58 -> 41 ms).
        h = jax.lax.optimization_barrier(h)
    return h.reshape(h.shape[0], -1)

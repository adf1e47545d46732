"""distillbench's CPU lowering of ``lax.conv_general_dilated``: one rule, two rewrites.

XLA:CPU runs a convolution fast when it is in its canonical layout (input ``(N, *S, C)``, filter
``(*K, I, O)``, output ``(N, *S, O)``); its own pass transposes others into it, but not inside a
``while`` loop's body (jax-ml/jax#12868). There, the convolutions JAX derives for gradients (the
filter gradient convolves the input with the output gradient: dimension numbers ``f01b_i01o->01bf``)
ran as XLA's generic loop: a ``frepo-conv`` filter gradient on 10 images of 28x28 took 103 ms per
iteration of a ``fori_loop`` against 11 ms outside one (jaxlib 0.10.2, 2-core Zen 3), and every
training loop that is one compiled loop (RCIG's inner and Hessian-inverse steps, FRePo's pool,
the ``nn`` evaluator's steps) pays it. So:

* float32 (any dtype but float64) convolutions not in the canonical layout are written as explicit
  transposes into it, the canonical convolution, and a transpose back
  (:func:`distillbench.compat.conv_layout.canonical_conv`): the same products and sums, so the same
  values (to the last bit in the tests), in every context;
* float64 convolutions are routed into slices and dot products
  (:func:`distillbench.compat.float64_conv.conv_by_slices`): XLA:CPU's own crashed on AVX-512.

:func:`install` registers the rule (process-wide, idempotent); it must run before a convolution is
first traced and compiled, so :func:`distillbench.runner.pipeline.enable_float64` calls it for every
run, ``evaluate``, ``explain`` and the conformance suite.
"""

from __future__ import annotations

#: Set once the rule is registered.
_INSTALLED = False


def install() -> bool:
    """Registers the CPU lowering; True when it is in place in this process."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:  # jax's lowering registry: private, checked on the oldest and newest supported stacks
        from jax._src.interpreters import mlir
        from jax._src.lax import convolution

        from distillbench.compat.conv_layout import canonical_conv, is_canonical
        from distillbench.compat.float64_conv import conv_by_slices, is_float64

        prim = convolution.conv_general_dilated_p
        entry = mlir._platform_specific_lowerings["cpu"].get(prim)
        if entry is None:
            xla_rule = convolution._conv_general_dilated_lower
        else:  # a LoweringRuleEntry (jax 0.6+), or the rule itself (jax 0.5)
            xla_rule = getattr(entry, "rule", entry)
        routed = mlir.lower_fun(conv_by_slices, multiple_results=False)
        canonical = mlir.lower_fun(canonical_conv, multiple_results=False)
    except (ImportError, AttributeError, KeyError, TypeError):  # a future jax moved it: XLA's own, as before
        return False

    def rule(ctx, lhs, rhs, **params):
        if any(is_float64(aval.dtype) for aval in (*ctx.avals_in, *ctx.avals_out)):
            return routed(ctx, lhs, rhs, **params)
        if not is_canonical(params["dimension_numbers"], params["feature_group_count"],
                            params["batch_group_count"]):
            return canonical(ctx, lhs, rhs, **params)
        return xla_rule(ctx, lhs, rhs, **params)

    mlir.register_lowering(prim, rule, platform="cpu")
    _INSTALLED = True
    return True

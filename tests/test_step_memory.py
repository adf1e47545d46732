"""Where a compiled step's temporaries live between steps (``pipeline.place_temporaries``): reused
in the heap when re-faulting them would cost much of the step, mapped afresh when the step's
arithmetic dwarfs it (a freed block in the heap can be split, and the next step then holds two)."""

import sys

import jax
import jax.numpy as jnp
import pytest

from distillbench.runner import pipeline

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile()


def _light(x):
    """A few operations per byte of temporaries: a sort of a scaled copy."""
    return jnp.sort(x * 2.0, axis=None)[:10]


def _heavy(a):
    """Hundreds of operations per byte: two chained 512x512 products."""
    return (a @ a @ a).sum()


@pytest.fixture
def managed_malloc():
    if not pipeline.keep_freed_memory():
        pytest.skip("malloc is not glibc's here")
    yield
    pipeline.place_temporaries(_compiled(_light, jnp.ones((64, 64), jnp.float32)))  # reuse again


def test_a_step_light_in_arithmetic_keeps_its_temporaries(managed_malloc):
    compiled = _compiled(_light, jnp.ones((1000, 1000), jnp.float32))
    temp, flops = pipeline._temporaries_and_flops(compiled)
    assert temp > 0 and flops < pipeline.REUSE_BELOW_FLOPS_PER_BYTE * temp
    assert pipeline.place_temporaries(compiled) is True


def test_a_step_heavy_in_arithmetic_maps_its_temporaries_afresh(managed_malloc):
    compiled = _compiled(_heavy, jnp.ones((512, 512), jnp.float32))
    temp, flops = pipeline._temporaries_and_flops(compiled)
    assert temp > 0 and flops > pipeline.REUSE_BELOW_FLOPS_PER_BYTE * temp
    assert pipeline.place_temporaries(compiled) is False


def test_a_program_without_analyses_leaves_malloc_as_it_is(managed_malloc):
    class NoAnalyses:
        def memory_analysis(self):
            raise NotImplementedError

        def cost_analysis(self):
            raise NotImplementedError

    assert pipeline.place_temporaries(NoAnalyses()) is None

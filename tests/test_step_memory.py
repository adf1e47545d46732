"""Where a compiled step's temporaries live between steps (``pipeline.place_temporaries``): a large
block is mapped afresh each step (one freed inside the heap can be split, and the next step then
holds two), unless its page faults would cost much of the step; a small one is kept for reuse."""

import sys

import jax
import jax.numpy as jnp
import pytest

from distillbench.runner import pipeline

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


def _sorting(n: int):
    """A compiled program (never run) whose temporaries grow with ``n``: a sort of a scaled copy."""
    return jax.jit(lambda x: jnp.sort(x * 2.0, axis=None)[:10]).lower(
        jax.ShapeDtypeStruct((n, n), jnp.float32)).compile()


@pytest.fixture(autouse=True)
def managed_malloc():
    if not pipeline.keep_freed_memory():
        pytest.skip("malloc is not glibc's here")
    yield
    pipeline.place_temporaries(_sorting(1000), 1.0)  # small: reuse again, as the process started


def _fault_seconds(program) -> float:
    return pipeline._temporaries(program) * pipeline.FAULT_SECONDS_PER_BYTE


def test_a_small_block_is_kept_whatever_the_step_time():
    program = _sorting(1000)
    assert 0 < pipeline._temporaries(program) < pipeline.MAP_AFRESH_FROM_BYTES
    assert pipeline.place_temporaries(program, 1e6) is True


def test_a_large_block_is_mapped_afresh_when_its_faults_are_a_small_share_of_the_step():
    program = _sorting(9000)
    assert pipeline._temporaries(program) >= pipeline.MAP_AFRESH_FROM_BYTES
    assert pipeline.place_temporaries(program, _fault_seconds(program) / pipeline.REUSE_ABOVE_FAULT_SHARE * 2) is False


def test_a_block_of_rcigs_size_is_mapped_afresh_on_a_long_step():
    # RCIG's step at width 32 has a 217 MiB block: kept for reuse (a floor of 256 MiB), 3 of 7 runs held it twice
    program = next(p for p in map(_sorting, range(4000, 9001, 250)) if 200 << 20 < pipeline._temporaries(p) < 256 << 20)
    assert pipeline.place_temporaries(program, 4.5) is False


def test_a_large_block_is_kept_when_its_faults_would_weigh_on_a_short_step():
    program = _sorting(9000)
    assert pipeline.place_temporaries(program, _fault_seconds(program) / pipeline.REUSE_ABOVE_FAULT_SHARE / 2) is True


def test_no_analysis_or_no_time_leaves_malloc_as_it_is():
    class NoAnalysis:
        def memory_analysis(self):
            raise NotImplementedError

    assert pipeline.place_temporaries(NoAnalysis(), 1.0) is None
    assert pipeline.place_temporaries(_sorting(64), 0.0) is None

"""distillbench.compat.neural_tangents: neural-tangents 0.6.5 imports on every supported jax,
without TensorFlow, and its stax kernels give the values it gave on jax 0.5.3 (its last
supported jax). Without the library, asking for it is refused with one line naming the extra."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distillbench.compat import neural_tangents as compat

from helpers import architecture

# stax NNGP and NTK (float64, W_std = sqrt(2), b_std = 0.1) of the built-in architectures on the
# inputs of _inputs(), computed with neural-tangents 0.6.5 on jax 0.5.3 / jaxlib 0.5.3 (rows of
# K(x1, x2), 3 x 2, flattened). Recomputing them on jax 0.10.2 agreed to 4e-16 relative.
REFERENCE_JAX_053 = {
    "fc1": (
        (0.6246959729178684, 0.49232254424485133, 0.8458365176717476, 0.6988312495323447, 0.7242008112932872, 0.6429964366896201),
        (0.6140423906205773, 0.3920741173285087, 0.9868066842792547, 0.7314828484415885, 0.789898508359192, 0.6666769482331169),
    ),
    "fc3": (
        (1.2122365689040984, 1.1019230104345934, 1.4142419882253563, 1.2887626065105118, 1.2891083062179232, 1.1958307533588204),
        (2.1115239862700017, 1.8191288032612323, 2.6414561755293686, 2.2948100865508456, 2.333560990316723, 2.121682780956921),
    ),
    "convnet3": (
        (0.13736636304635147, 0.12878475479997378, 0.1463317710363895, 0.13584737228763086, 0.13094706172385331, 0.12383016766654492),
        (0.25765804181374863, 0.23752700712929492, 0.2785152158087807, 0.24906008908210497, 0.24080229229494854, 0.22739783615896142),
    ),
    "convnet": (
        (0.16718019153232996, 0.15498741444263972, 0.1776641314247946, 0.1639570723808257, 0.15875222168681424, 0.14782027804184442),
        (0.3456556529234285, 0.31682742766354366, 0.37110789356835117, 0.3344823157905571, 0.3236033707380191, 0.3010846536995446),
    ),
}


def _inputs():
    rng = np.random.default_rng(0)  # PCG64: the same numbers on every numpy
    return rng.standard_normal((3, 8, 8, 2)), rng.standard_normal((2, 8, 8, 2))


@pytest.mark.parametrize("arch", sorted(REFERENCE_JAX_053))
@pytest.mark.slow
def test_stax_kernels_match_the_jax_053_values(arch):
    from distillbench_builtin.architectures.networks import stax_network

    x1, x2 = _inputs()
    _, _, kernel_fn = stax_network(arch, w_std=2**0.5, b_std=0.1)
    nngp, ntk = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), ("nngp", "ntk"))
    assert nngp.dtype == jnp.float64
    ref_nngp, ref_ntk = (np.asarray(r).reshape(3, 2) for r in REFERENCE_JAX_053[arch])
    np.testing.assert_allclose(np.asarray(nngp), ref_nngp, rtol=1e-13, atol=0)
    np.testing.assert_allclose(np.asarray(ntk), ref_ntk, rtol=1e-13, atol=0)


@pytest.mark.slow
def test_the_fast_kernels_give_the_same_values():
    """An independent implementation agrees with the stored values (so they are not a fluke)."""
    from distillbench_builtin.kernels.exact import build_nngp, build_ntk

    x1, x2 = _inputs()
    for arch in ("fc1", "convnet3"):
        ref_nngp, ref_ntk = (np.asarray(r).reshape(3, 2) for r in REFERENCE_JAX_053[arch])
        for build, ref in ((build_nngp, ref_nngp), (build_ntk, ref_ntk)):
            k = build(arch=architecture(arch), implementation="fast").kernel_fn(jnp.asarray(x1), jnp.asarray(x2), None)
            np.testing.assert_allclose(np.asarray(k), ref, rtol=1e-10)


def test_patch_provides_exactly_the_missing_names_and_is_idempotent():
    import jax.core
    from jax.interpreters import ad

    compat.import_neural_tangents()
    assert compat.patch_jax_for_neural_tangents() == []  # everything is there now
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive", "ShapedArray", "eval_context"):
        assert getattr(jax.core, name) is not None, name
    from jax.util import safe_map, safe_zip

    assert safe_map(lambda a, b: a + b, [1, 2], [3, 4]) == [4, 6]
    assert safe_zip([1, 2], "ab") == [(1, "a"), (2, "b")]
    with pytest.raises((ValueError, AssertionError)):
        safe_zip([1, 2], [1])
    assert ad.zeros_like_p is not None


def test_neural_tangents_imports_without_tensorflow():
    code = (
        "import sys\n"
        "from distillbench.compat.neural_tangents import import_neural_tangents\n"
        "nt = import_neural_tangents()\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "try:\n"
        "    nt.experimental.empirical_ntk_fn_tf\n"
        "except AttributeError as e:\n"
        "    assert 'disabled by distillbench' in str(e)\n"
        "else:\n"
        "    raise SystemExit('experimental was not disabled')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


# A process in which neural-tangents is not installed: its spec is hidden from the import system.
HIDE_NT = (
    "import importlib.abc, sys\n"
    "class Hide(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'neural_tangents' or name.startswith('neural_tangents.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Hide())\n"
)


def test_without_the_extra_import_raises_with_the_install_hint():
    code = HIDE_NT + (
        "from distillbench.compat.neural_tangents import has_neural_tangents, import_neural_tangents\n"
        "assert not has_neural_tangents()\n"
        "try:\n"
        "    import_neural_tangents()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "distillbench[neural-tangents]" in out.stdout


@pytest.mark.slow
def test_without_the_extra_the_builtin_kernels_run_and_the_reference_is_refused(tmp_path):
    code = HIDE_NT + (
        "sys.argv = ['distillbench'] + sys.argv[1:]\n"
        "from distillbench.cli import main\n"
        "main()\n"
    )
    store = tmp_path / "r.sqlite"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    refused = subprocess.run([sys.executable, "-c", code, "run", "--store", str(store), "kernel=ntk",
                              "kernel.implementation=neural-tangents"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "distillbench[neural-tangents]" in lines[0], refused.stderr
    assert not store.exists()
    ok = subprocess.run([sys.executable, "-c", code, "run", "-q", "--store", str(store), "kernel=ntk",
                         "kernel.arch=convnet3", "objective.steps=2", "dataset=synthetic", "dataset.n_train=40",
                         "dataset.n_test=20", "dataset.num_classes=2", "dataset.height=8", "dataset.width=8"],
                        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]

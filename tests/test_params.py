import pytest

from distillbench import ConfigError, Param


def test_parse_types_and_bounds():
    steps = Param("steps", int, 10, "number of steps", min=0)
    assert steps.parse("5") == 5
    with pytest.raises(ConfigError, match=r"objective.steps=-5 is out of range \(must be >= 0\)"):
        steps.parse("-5", owner="objective")
    with pytest.raises(ConfigError, match="not a valid int"):
        steps.parse("ten")
    reg = Param("reg", float, 1e-6, "ridge", min=0.0, min_open=True)
    assert reg.parse("1e-3") == 1e-3
    with pytest.raises(ConfigError, match="must be > 0"):
        reg.parse("0")
    with pytest.raises(ConfigError, match="finite"):
        reg.parse("nan")
    flag = Param("learn_labels", bool, False, "learn labels")
    assert flag.parse("true") is True and flag.parse("0") is False
    with pytest.raises(ConfigError):
        flag.parse("maybe")
    arch = Param("arch", str, "fc1", "architecture", choices=("fc1", "convnet3"))
    with pytest.raises(ConfigError, match="choose from: fc1, convnet3"):
        arch.parse("resnet")
    auto = Param("reg", float, None, "ridge or auto", nullable=True, min=0.0)
    assert auto.parse("auto") is None


def test_declaration_errors():
    with pytest.raises(TypeError):
        Param("x", list, [], "bad type")
    with pytest.raises(TypeError):
        Param("x", int, 1, "")
    with pytest.raises(ConfigError):
        Param("x", int, -1, "default out of range", min=0)


def test_ints_are_held_to_what_the_store_and_jax_can_hold():
    from distillbench.params import INT_MAX

    width = Param("width", int, 8, "width", min=1)
    assert width.parse(str(INT_MAX)) == INT_MAX
    with pytest.raises(ConfigError, match=r"kernel.width=9223372036854775808 is out of range .*2\*\*63"):
        width.parse(str(INT_MAX + 1), owner="kernel")
    seed = Param("seed", int, 0, "seed", min=0, max=Param.SEED_MAX)
    assert seed.parse("4294967295") == 2**32 - 1
    with pytest.raises(ConfigError, match=r"seed=99999999999999999999 is out of range \(must be <= 4294967295\)"):
        seed.parse("99999999999999999999")
    assert seed.describe_type() == "int >= 0 <= 4294967295"


def test_a_huge_text_is_not_echoed_whole():
    with pytest.raises(ConfigError) as info:
        Param("steps", int, 1, "steps").parse("9" * 5000)
    assert len(str(info.value)) < 200 and "5000 chars" in str(info.value)

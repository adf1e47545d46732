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

"""Strict YAML -> frozen config parsing: unknown keys and wrong types are errors naming the key."""

import dataclasses

import pytest

from flame_jax.cli import ConfigError, config_from_mapping, dump_config, load_config


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    rate: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example:
    seed: int = 0
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    inner: Inner = Inner()

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def test_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nsizes: [4, 5]\ninner: {rate: 2}\n")
    cfg = load_config(Example, path, {"name": "y", "seed": None})
    assert cfg == Example(seed=3, name="y", sizes=(4, 5), inner=Inner(rate=2.0))
    assert load_config(Example, None, {"seed": 7}).seed == 7
    assert load_config(Example, None) == Example()


def test_round_trip(tmp_path):
    cfg = Example(seed=9, flag=True, limit=4, sizes=(3,), inner=Inner(rate=0.25))
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Example, tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sead": 1}, "run.yaml: sead: unknown key for Example"),
        ({"seed": "1"}, "run.yaml: seed: expected an integer, got '1'"),
        ({"seed": True}, "seed: expected an integer"),
        ({"flag": 1}, "flag: expected true or false"),
        ({"sizes": 3}, "sizes: expected a list"),
        ({"sizes": [1, "a"]}, r"sizes\[1\]: expected an integer"),
        ({"inner": {"rate": "fast"}}, "inner.rate: expected a number, got 'fast'"),
        ({"inner": {"speed": 1}}, "inner.speed: unknown key for Inner"),
        ({"seed": -2}, "seed must be >= 0, got -2"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(Example, data, where="run.yaml")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(Example, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Example, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Example, tmp_path / "list.yaml")

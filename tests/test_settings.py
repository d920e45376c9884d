"""Every setting is documented: in the README's Configuration section and in `.env.example`,
with the default `Settings` really has. Derived from `Settings`, so a new setting fails here
until both documents list it."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from promptapi.config import Settings, env_name
from promptapi.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NAMES = [env_name(f.name) for f in fields(Settings)]


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            assert name not in values, f".env.example: {name} is listed twice"
            values[name] = value
    return values


def configuration_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Configuration\n(.*?)^## ", readme, re.S | re.M)
    assert found, "the README has no Configuration section"
    return found.group(1)


def test_env_example_lists_exactly_the_settings() -> None:
    assert sorted(env_example()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_env_example_gives_each_default(name: str) -> None:
    value = env_example()[name]
    field = next(f for f in fields(Settings) if env_name(f.name) == name)
    # Loading the file's value gives the default (an empty value means unset).
    assert getattr(Settings.from_env({name: value}), field.name) == field.default


@pytest.mark.parametrize("name", NAMES)
def test_every_setting_is_in_the_readme_configuration(name: str) -> None:
    assert f"`{name}`" in configuration_section()


NUMERIC = [env_name(f.name) for f in fields(Settings) if str(f.type).startswith(("int", "float"))]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["-1000000000000", "1000000000000000000000"])
def test_every_numeric_setting_is_bounded(name: str, value: str) -> None:
    """A number far out of any sensible range stops the process with one line naming it."""
    with pytest.raises(ConfigError, match=f"^{name} must be "):
        Settings.from_env({name: value})

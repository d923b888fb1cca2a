"""Experiment configs: loading a config file and applying ``key=value`` overrides to it, type-checked.

    config = load_config("configs/ve/cifar10_ncsnpp_continuous.py", ["training.batch_size=64"])
    config = with_overrides(saved_config, ["sampling.method=ode"])     # e.g. the config of a checkpoint

A config file is Python with a ``get_config()`` returning an ml_collections ConfigDict. An override names an
existing field and gives its value as text, converted to the type of the value it replaces; an unknown key or
a value of the wrong type raises `ConfigError`, naming it (and the closest known keys).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
import sys
from collections.abc import Sequence

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A config file or a ``--config.*`` override that cannot be used; the message names it."""


def find_config_file(path: str) -> pathlib.Path:
    """``path`` as given, else relative to the repository root (so ``configs/...`` works from anywhere)."""
    for candidate in (pathlib.Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"config file not found: {path} (looked in {pathlib.Path.cwd()} and {REPO_ROOT})")


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the config file ``path`` and applies ``overrides`` ("a.b=value" strings)."""
    file = find_config_file(path)
    # Config files import their defaults as `configs.<module>`: make the folder holding `configs/` importable.
    roots = [p.parent for p in file.parents if p.name == "configs"]
    for root in roots[:1]:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(f"_score_sde_config_{abs(hash(file))}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"config file {file} has no get_config() function")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {file} failed to load: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() of {file} returned {type(config).__name__}, not a ConfigDict")
    return with_overrides(config, overrides)


def set_config_value(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets the existing field ``key`` ("training.batch_size") from the command-line text ``text``,
    converted to the field's type; an unknown key or a value of the wrong type raises ConfigError."""
    *groups, name = key.split(".")
    node = config
    for i, group in enumerate(groups):
        if group not in node or not isinstance(node[group], ml_collections.ConfigDict):
            raise ConfigError(
                f"unknown config key {key!r}: {'.'.join(groups[: i + 1])!r} is not a group"
                + _suggest(".".join(groups[: i + 1]), config)
            )
        node = node[group]
    if name not in node:
        raise ConfigError(f"unknown config key {key!r}" + _suggest(key, config))
    old = node[name]
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(
            f"config key {key!r} is a group; set one of its fields, e.g. {key}.{next(iter(old.keys()), '')}"
        )
    try:
        value = _parse_like(old, text)
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"bad value {text!r} for config key {key!r} ({type(old).__name__} expected): {e}") from None
    with node.ignore_type():
        node[name] = value


def _parse_like(old, text: str):
    """Parses ``text`` as a value of the same type as ``old``; "None" unsets a field that is not a string (e.g.
    config.sampling.steps, to give config.sampling.nfe instead)."""
    if text.strip() == "None" and not isinstance(old, str):
        return None
    if isinstance(old, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if isinstance(old, int):
        value = float(text) if any(c in text for c in ".eE") else int(text)
        if value != int(value):
            raise ValueError("expected an integer")
        return int(value)
    if isinstance(old, float):
        return float(text)
    if isinstance(old, str):
        return text
    if isinstance(old, (tuple, list)):
        stripped = text.strip()
        if not stripped or stripped in "()[]":
            items = []
        else:
            parsed = ast.literal_eval(stripped if stripped[0] in "([" else f"({stripped},)")
            items = list(parsed) if isinstance(parsed, (tuple, list)) else [parsed]
        if old:
            items = [_parse_like(old[0], str(item)) for item in items]
        return type(old)(items)
    # None or an unusual type: a Python literal if it is one, else the string.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _all_keys(config, prefix=""):
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield from _all_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _suggest(key: str, config) -> str:
    close = difflib.get_close_matches(key, list(_all_keys(config)), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def with_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """``config`` (e.g. the one saved with a checkpoint) with "a.b=value" overrides applied, in place."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"config override {override!r} is not of the form key=value")
        set_config_value(config, key, value)
    return config

"""Loading a run's configuration: a preset or a TOML file, plus ``--set`` overrides, into the
frozen dataclasses of ``raysal.config.schema``, every field checked as it is read.

Pure stdlib: no ``ray``, no ``tensorflow``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from raysal.config.schema import Config, _check
from raysal.errors import ConfigError


def _absolute(path: str, cwd: str | None) -> str:
    if not path or "://" in path or os.path.isabs(os.path.expanduser(path)):
        return path
    return os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(path)))


def absolute_paths(cfg: Config, cwd: str | None = None) -> Config:
    """``cfg`` with a relative local ``data.root``, ``model.path``, ``model.weights`` and ``model.handle`` made
    absolute against ``cwd`` (default: the working directory), so no path that a worker reads
    depends on where the driver started. Source paths are relative to ``data.root``; URIs are
    left as they are."""
    data = dataclasses.replace(cfg.data, root=_absolute(cfg.data.root, cwd))
    # A handle without "://" is a local SavedModel folder; a URL (through the hub cache) stays as it is.
    model = dataclasses.replace(cfg.model, path=_absolute(cfg.model.path, cwd), handle=_absolute(cfg.model.handle, cwd),
                                weights=_absolute(cfg.model.weights, cwd))
    return dataclasses.replace(cfg, data=data, model=model)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("raysal.presets").iterdir()
                  if p.name.endswith(".toml"))


def _read_toml(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if name_or_path in preset_names():
        text = resources.files("raysal.presets").joinpath(f"{name_or_path}.toml").read_text()
    elif path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    else:
        raise ConfigError(f"config: {name_or_path!r} is neither a preset ({', '.join(preset_names())}) "
                          "nor an existing .toml file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {name_or_path!r} is not valid TOML: {exc}") from None


def parse_override(assignment: str) -> tuple[str, Any]:
    """'select.budget=100' -> ('select.budget', 100); a value that is not TOML stays a string."""
    key, sep, raw = assignment.partition("=")
    _check(bool(sep) and bool(key.strip()), "--set", f"{assignment!r} is not of the form key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _apply_override(table: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = table
    for part in parents:
        node = node.setdefault(part, {})
        _check(isinstance(node, dict), dotted, f"{part!r} is not a table")
    node[leaf] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        _check(isinstance(value, dict), where, f"must be a table, got {value!r}")
        return build(hint, value, where)
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is float:
        _check(isinstance(value, (list, tuple)) and all(_is_number(v) for v in value), where,
               f"must be a list of finite numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if typing.get_origin(hint) is tuple:
        _check(isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value), where,
               f"must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is bool:
        _check(isinstance(value, bool), where, f"must be true or false, got {value!r}")
        return value
    if hint is float:
        _check(_is_number(value), where, f"must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), where, f"must be an integer, got {value!r}")
        return value
    if hint is str:
        _check(isinstance(value, str), where, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {hint!r}")  # a bug in this module, not in the config


def build(cls: type, table: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "where"}
    unknown = sorted(set(table) - names)
    prefix = f"{where}." if where else ""
    _check(not unknown, f"{prefix}{unknown[0]}" if unknown else where,
           f"unknown key; {cls.__name__} has {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in table]
    _check(not missing, f"{prefix}{missing[0]}" if missing else where, "is required but missing")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in table.items()}
    if "where" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["where"] = where
    return cls(**kwargs)


def config_from_dict(table: Mapping[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (a parsed TOML file)."""
    return build(Config, table, "")


def load_config(name_or_path: str = "demo", overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a preset name or a TOML file, apply dotted-key overrides, validate.

    Args:
        name_or_path: a preset (``demo``, ``flowers``) or a path to a ``.toml`` file.
        overrides: e.g. ``{"select.budget": 100}``; unknown keys are refused like file keys.
    """
    table = _read_toml(name_or_path)
    for dotted, value in (overrides or {}).items():
        _apply_override(table, dotted, value)
    return config_from_dict(table)

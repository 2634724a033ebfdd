"""Nested-dataclass configs: YAML presets as partial overrides, `--set a.b=c`, and strict validation.

The dataclasses are the single source of truth. A preset or override naming an unknown key, or giving a value of the
wrong type, is a user error that names the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from recon.data.errors import ReconError


def _field_types(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting where YAML/CLI strings allow) or raise ReconError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ReconError as e:
                errors.append(str(e))
        raise ReconError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ReconError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ReconError(f"{key}: expected a list like [1, 2], got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ReconError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ReconError(
                f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}"
            )
        return merge(tp(), value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ReconError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ReconError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ReconError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ReconError(f"{key}: expected a string, got {value!r}")
    return value


def merge(cfg, updates: dict, prefix: str = ""):
    """A copy of dataclass ``cfg`` with the nested mapping ``updates`` applied (strictly validated)."""
    if not isinstance(updates, dict):
        raise ReconError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {updates!r}")
    types_ = _field_types(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in updates.items():
        full = prefix + str(key)
        if key not in names:
            raise ReconError(f"unknown config key {full!r}; valid keys here: {', '.join(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, prefix=full + ".")
        else:
            changes[key] = _coerce(value, types_[key], full)
    return dataclasses.replace(cfg, **changes)


def parse_set(item: str) -> dict:
    """``a.b.c=value`` -> {"a": {"b": {"c": value}}} with the value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise ReconError(f"--set {item!r}: expected key=value, e.g. --set train.steps=3000")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"config file {path} does not exist; see configs/ for the presets")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ReconError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ReconError(f"config file {path} must hold a mapping of keys")
    return data


def preset_layers(path: str | Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    """A preset and the presets under it, outermost last: a preset's ``base: other.yaml`` (relative to its own
    folder) is applied first, so variants such as configs/convex_indoor.yaml state only what they change."""
    path = Path(path)
    if path.resolve() in seen:
        raise ReconError(
            f"config file {path} names itself as a base (through {seen[-1].name}); remove that base:"
        )
    data = dict(load_yaml(path))
    parent = data.pop("base", None)
    if parent is None:
        return [data]
    if not isinstance(parent, str):
        raise ReconError(f"config file {path}: base must be a file name, got {parent!r}")
    return [*preset_layers(path.parent / parent, (*seen, path.resolve())), data]


def to_dict(cfg) -> dict:
    """Plain nested dict (tuples as lists) for YAML output."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def build_config(
    cls, preset: str | Path | None = None, sets: list[str] | None = None, base: dict | None = None
):
    """Defaults <- base (e.g. a saved run config) <- preset YAML (after the presets it names as ``base:``) <- each
    ``--set`` in order."""
    cfg = cls()
    if base:
        cfg = merge(cfg, base)
    if preset:
        for layer in preset_layers(preset):
            cfg = merge(cfg, layer)
    for item in sets or []:
        cfg = merge(cfg, parse_set(item))
    return cfg

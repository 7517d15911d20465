"""The command line and YAML of the recipe configs: one typed parser for both.

    python recipes/train_gdso.py --config recipes/configs/gdso_agiqa.yaml --steps 40 --lambda_pw 0.5

``parse_config(cls, argv)`` starts from ``cls``'s defaults, applies ``--config FILE.yaml`` and then the ``--field
value`` overrides. A YAML value goes through the same typed reading as a command-line one: ``lr: 1e-3`` (a string
to PyYAML) is 0.001, ``dimensions: realism`` is ``["realism"]``, ``batch_size: 2.5`` is refused with the file, line
and field. A recipe's main, with its one-line errors, is ``zrcore.training.entry.run_recipe``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from zrcore._renamed import warn_renamed

DEBUG_ENV = "ZRCORE_DEBUG"
# the dimensions each built-in dataset has, used when the user names none
DATA_DIMENSIONS = {"agiqa": ["alignment", "realism"]}


class ConfigError(ValueError):
    """A bad configuration value; its message is one line naming the field (and the file and line for YAML)."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors raise ``ConfigError`` (one line, no usage block) instead of exiting."""

    def error(self, message):  # noqa: D102
        raise ConfigError(message)


def make_parser(description: str = "", prog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser whose errors are ``ConfigError`` (so that ``run_main`` reports them in one line)."""
    return _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


# ---- typed values --------------------------------------------------------------------------------------------------

def _type_name(tp) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean (true or false)"}
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _finite(value: float, shown) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {shown!r}")
    return value


def _coerce(tp, text: str):
    """A command-line string as a value of type ``tp`` (bool, int, float, str, list[...] comma-separated,
    ``X | None`` with "none")."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, t.strip()) for t in text.split(",") if t.strip()]
    if origin in (typing.Union, types.UnionType):  # "X | None": "none" is None, else an X
        if text.lower() == "none":
            return None
        return _coerce(next(a for a in typing.get_args(tp) if a is not type(None)), text)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return _finite(float(text), text)
        except ValueError as err:
            if "finite" in str(err):
                raise
            raise ValueError(f"expected a number, got {text!r}") from None
    return tp(text)


def coerce_yaml(tp, value):
    """A value read by PyYAML as a value of type ``tp``: native values of the right type pass (an int where a
    float is due too), strings are read as on the command line, anything else is refused."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return coerce_yaml(next(a for a in typing.get_args(tp) if a is not type(None)), value)
    if isinstance(value, str):
        return _coerce(tp, value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, list):
            return [coerce_yaml(inner, v) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), value)
    elif tp is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    shown = "null" if value is None else repr(value)
    raise ValueError(f"expected {_type_name(tp)}, got {shown}")


# ---- fields --------------------------------------------------------------------------------------------------------

def flat_fields(cls) -> dict[str, tuple[type, dataclasses.Field]]:
    """Every settable field of a config class by its command-line name: "lr", and "sampling.temperature" for the
    fields of a nested config group."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out |= {f"{f.name}.{name}": entry for name, entry in flat_fields(tp).items()}
        else:
            out[f.name] = (tp, f)
    return out


def _default(cls, name: str):
    obj = cls.__new__(cls)  # the defaults without running the checks
    for part in name.split("."):
        f = {x.name: x for x in dataclasses.fields(obj)}[part]
        obj = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return obj


def _renamed(cls, name: str, where: str) -> str:
    new = cls.RENAMED[name]
    warn_renamed(f"{where}{name}", f"{where}{new}", stacklevel=4)
    return new


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml_lines(node, prefix: str = "") -> dict[str, int]:
    """Flattened key -> 1-based line of a composed YAML mapping node."""
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}{key.value}"
            out[name] = key.start_mark.line + 1
            out |= _yaml_lines(value, name + ".")
    return out


def _nest(cls, values: dict) -> dict:
    """{"a": 1, "sampling.x": 2} -> {"a": 1, "sampling": SamplingConfig-compatible {"x": 2, other defaults}}."""
    out: dict = {}
    for key, value in values.items():
        group, _, name = key.partition(".")
        if name:
            out.setdefault(group, dataclasses.asdict(_default(cls, group)))[name] = value
        else:
            out[key] = value
    return out


def read_yaml_config(cls, path: str | Path) -> dict:
    """The typed, flattened values of a YAML config file for ``cls``; errors name the file, line and field."""
    fields = flat_fields(cls)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: no such file {str(path)!r}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = _yaml_lines(yaml.compose(text))
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {path} must hold a mapping of field: value, got {type(raw).__name__}")
    data = _flatten(raw)
    for key in list(data):
        if key in cls.RENAMED:
            new = _renamed(cls, key, "")
            data[new] = data.pop(key)
            lines[new] = lines.get(key, 0)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"config: {path} has unknown keys {unknown}")
    values = {}
    for key, value in data.items():
        try:
            values[key] = coerce_yaml(fields[key][0], value)
        except ValueError as err:
            raise ConfigError(f"config: {path}:{lines.get(key, '?')}: {key}: {err}") from None
    return values


def add_config_arguments(parser, cls, skip: frozenset = frozenset()) -> None:
    """``--config`` and one ``--field`` per config field (with its help and default), plus the renamed flags;
    ``skip``: fields the caller defines itself."""
    parser.add_argument("--config", help="YAML file with field: value entries (nested groups as mappings)")
    for name, (tp, f) in flat_fields(cls).items():
        if name in skip:
            continue
        default = _default(cls, name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(f"--{name}", dest=name, default=None, metavar=getattr(tp, "__name__", str(tp)).upper(),
                            help=f"{f.metadata.get('help', '')} (default: {shown})")
    for old, new in cls.RENAMED.items():
        parser.add_argument(f"--{old}", dest=f"renamed:{old}", default=None, help=f"renamed --{new}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1)")


def config_from_args(cls, args: dict):
    """The config of parsed arguments (``vars(parser.parse_args())`` of a parser set up by
    ``add_config_arguments``): defaults, then the YAML file, then the flags."""
    fields = flat_fields(cls)
    values = read_yaml_config(cls, args["config"]) if args.get("config") else {}
    raw = {name: args[name] for name in fields if args.get(name) is not None}
    for old in cls.RENAMED:
        if args.get(f"renamed:{old}") is not None:
            raw[_renamed(cls, old, "--")] = args[f"renamed:{old}"]
    for name, text in raw.items():
        try:
            values[name] = _coerce(fields[name][0], text)
        except ValueError as err:
            raise ConfigError(f"--{name}: {err}") from None
    data = values.get("data", _default(cls, "data") if "data" in fields else None)
    if "dimensions" in fields and "dimensions" not in values and data in DATA_DIMENSIONS:
        values["dimensions"] = list(DATA_DIMENSIONS[data])  # the dataset's own dimensions when none are named
    try:
        return cls(**_nest(cls, values))
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a field's own check (or a nested group given a scalar)
        raise ConfigError(str(err)) from err


def parse_config(cls, argv: list[str] | None = None, description: str = ""):
    """``cls`` defaults, then ``--config FILE.yaml``, then ``--field value`` overrides; unknown keys are errors.
    Nested groups: ``--sampling.temperature 0.7`` or ``sampling: {temperature: 0.7}`` in YAML. Old names
    (``cls.RENAMED``) still work, with a FutureWarning naming the new one. ``dimensions`` left unset on a dataset
    with fewer dimensions (AGIQA-3K: alignment, realism) is that dataset's."""
    parser = make_parser(description or cls.__doc__)
    add_config_arguments(parser, cls)
    return config_from_args(cls, vars(parser.parse_args(argv)))


def save_config(cfg, path: str | Path) -> None:
    """The config as YAML (the run directory's record of its settings)."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

"""One config system for every stage: typed dataclasses, YAML files, dotted overrides, named presets.

Merge order (later wins): dataclass defaults < named preset < YAML files < a command's shorthand flags
< ``key.sub=value`` overrides. OmegaConf's structured configs do the type checking and reject unknown keys;
we turn its errors into ``ConfigError`` messages that name the key and the valid choices. Value checks
(ranges, choices) live in each dataclass's ``__post_init__`` so that they also run when configs are built in
Python; their ``ValueError`` becomes a ``ConfigError`` naming the section here, the one place that does so.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from jodiffusion import __version__
from jodiffusion.errors import ConfigError
from jodiffusion.utils.io import write_text_atomic
from jodiffusion.utils.safe_load import parse_yaml, read_text

T = TypeVar("T")

PRESET_PACKAGE = "jodiffusion.config.presets"


def list_presets(group: str) -> list[str]:
    """Names of the presets shipped for ``group`` (e.g. ``"vae"``)."""
    folder = resources.files(PRESET_PACKAGE) / group
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict:
    data = parse_yaml(text, source, "fix the file (YAML: key: value, nested by indentation)", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def _preset_dict(group: str, name: str) -> dict:
    path = resources.files(PRESET_PACKAGE) / group / f"{name}.yaml"
    if name not in list_presets(group) or not path.is_file():  # a name, never a path ("../x") into the package
        choices = ", ".join(list_presets(group)) or "(none)"
        raise ConfigError(f"unknown {group} preset '{name}'; available presets: {choices}")
    return _read_yaml(path.read_text(encoding="utf-8"), f"preset {group}/{name}")


# What ``save_run_config`` writes beside the config itself: a run's own config.yaml passed back with
# ``--config`` is read without it, so the run can be repeated from what it wrote.
RUN_CONFIG_VERSION_KEY = "jodiffusion_version"


def _file_dict(path: str | Path, keys: Sequence[str] | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    data = _read_yaml(read_text(path, "config file", "give a YAML file", ConfigError), str(path))
    if RUN_CONFIG_VERSION_KEY in data:
        version = data.pop(RUN_CONFIG_VERSION_KEY)
        if str(version) != __version__:
            logging.getLogger(__name__).warning(
                "%s was written by jodiffusion %s; this is %s: settings whose defaults changed may differ",
                path, version, __version__)
    if keys is not None:  # a run's config.yaml read by a command that needs only some of its sections
        if not any(k in data for k in keys):
            raise ConfigError(f"{path}: none of the sections {', '.join(keys)} that this command reads; "
                              f"give a YAML file with a '{keys[0]}:' section")
        data = {k: v for k, v in data.items() if k in keys}
    return data


def _merge(base, layer: Any, source: str):
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    if "Key" in msg and "not in" in msg:
        parent = key.rsplit(".", 1)[0] if key and "." in key else ""
        return f"unknown config key '{key}'" + (f" (under '{parent}')" if parent else "") + f": {msg}"
    if isinstance(exc, MissingMandatoryValue) and key:
        return f"'{key}' has no value; give {key}=VALUE"
    if key:
        return f"bad value for '{key}': {msg}"
    return msg


def load_config(
    schema: type[T],
    *,
    group: str | None = None,
    preset: str | None = None,
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    values: dict | None = None,
    flags: Sequence[tuple[str, dict]] = (),
    file_keys: Sequence[str] | None = None,
) -> T:
    """Build a validated ``schema`` instance from a preset, YAML files, a command's shorthand ``flags``
    (``(flag, nested dict of the keys it sets)``, each merged in turn), dotted overrides and, last,
    ``values`` (a nested dict, e.g. what a pipeline imposes on each of its stages). ``file_keys``: read only
    these top-level sections of each file (a run's whole config.yaml given to a command that needs its data)."""
    cfg = OmegaConf.structured(schema)
    if preset is not None:
        if group is None:
            raise ConfigError("a preset name needs a preset group")
        cfg = _merge(cfg, _preset_dict(group, preset), f"preset {group}/{preset}")
    for path in files:
        cfg = _merge(cfg, _file_dict(path, file_keys), str(path))
    for flag, layer in flags:
        cfg = _merge(cfg, layer, flag)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        try:
            layer = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{item}': {_describe(exc)}") from None
        cfg = _merge(cfg, layer, f"override '{item}'")
    if values:
        cfg = _merge(cfg, values, "values set by the caller")
    obj = _build(cfg)
    check_finite(obj)
    return obj


def _build(cfg):
    """The dataclass instance of a merged config; a ``__post_init__`` check's ValueError (or a ConfigError
    that does not name its section) becomes a ConfigError naming the section it came from."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from None
    except (ValueError, TypeError, ConfigError) as exc:  # raised by __post_init__ value checks
        section = _failing_section(cfg)
        msg = str(exc)
        if section and not msg.startswith(f"{section}."):
            msg = f"in '{section}': {msg}"
        raise ConfigError(msg) from None


def _failing_section(cfg, prefix: str = "") -> str:
    """The dotted key of the innermost section of ``cfg`` whose own checks fail ("" for the top level)."""
    for key in cfg:
        node = cfg._get_node(key)
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            continue
        if not dataclasses.is_dataclass(OmegaConf.get_type(node)):
            continue
        path = f"{prefix}{key}"
        inner = _failing_section(node, f"{path}.")
        if inner:
            return inner
        try:
            OmegaConf.to_object(node)
        except (ValueError, TypeError, ConfigError):
            return path
        except OmegaConfBaseException:
            continue
    return ""


def check_finite(value: Any, key: str = "") -> None:
    """Raise a ConfigError naming the first float of a config (dataclasses, lists, dicts) that is inf or
    nan: no setting of this project has a meaning for them (``train.lr=inf`` trains to NaN weights)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value}: not a finite number; give a finite value")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            check_finite(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")


def config_to_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    if isinstance(cfg, dict):
        return cfg
    raise TypeError(f"not a config dataclass: {type(cfg).__name__}")


def config_from_dict(schema: type[T], data: dict) -> T:
    """Rebuild a config saved by :func:`config_to_dict` (e.g. from a checkpoint's JSON)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def save_run_config(cfg: Any, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config and the package version into the run folder."""
    data = {"jodiffusion_version": __version__, **config_to_dict(cfg)}
    path = Path(run_dir) / name
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return path


def flatten_config(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as ``{dotted key: value}`` (lists and other leaves kept whole)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten_config(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
        return out
    return {prefix.rstrip("."): data}


def config_changes(previous: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two resolved configs: ``{key: (old, new)}`` (the package
    version a saved config carries is not a setting). Used to refuse a resume with changed settings and
    to name why a generation folder belongs to another run."""
    old, new = flatten_config(previous), flatten_config(current)
    old.pop("jodiffusion_version", None)
    new.pop("jodiffusion_version", None)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}

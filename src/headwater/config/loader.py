"""Load headwater.toml: parse, interpolate ``${ENV}``, validate, explain errors.

Every error is one line naming the file, the key, the bad value and what is valid.
Values that came from the environment are masked in errors: they may be secrets.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from headwater.config.model import Settings
from headwater.errors import ConfigError

DEFAULT_CONFIG = Path("headwater.toml")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DISCRIMINATORS = ("processor", "kind")  # keys that pick a model in a union


def load_settings(path: Path | str | None = None, *, required: bool = True) -> Settings:
    """Read and validate the configuration at ``path`` (default ``./headwater.toml``).

    With ``required=False`` a missing file yields the defaults (embedded everything).

    Raises:
        ConfigError: the file is missing (when required), not TOML, names an unset
            environment variable, or fails validation. The message is a single line
            per problem.
    """
    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.exists():
        if required:
            raise ConfigError(f"{p}: file not found; create one with 'headwater init'")
        return Settings(config_path=p.resolve())
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    secret_paths: set[tuple[str | int, ...]] = set()
    data = _interpolate(raw, (), p, secret_paths)
    return validate_settings(data, p, secret_paths)


def validate_settings(
    data: Mapping[str, Any],
    path: Path,
    secret_paths: set[tuple[str | int, ...]] | None = None,
) -> Settings:
    """Validate an already-parsed mapping; errors name ``path``."""
    try:
        return Settings.model_validate({**data, "config_path": path.resolve()})
    except ValidationError as exc:
        lines = [_explain(err, path, data, secret_paths or set()) for err in exc.errors()]
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def _interpolate(
    node: Any, where: tuple[str | int, ...], path: Path, secret_paths: set[tuple[str | int, ...]]
) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, (*where, k), path, secret_paths) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, (*where, i), path, secret_paths) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        secret_paths.add(where)

        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is not None:
                    return m.group(2)
                raise ConfigError(
                    f"{path}: {_dotted(where)}: environment variable {m.group(1)} is not set; "
                    f"export it or write ${{{m.group(1)}:-default}}"
                )
            return value

        return _ENV.sub(sub, node)
    return node


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(
    err: Any, path: Path, data: Mapping[str, Any], secret_paths: set[tuple[str | int, ...]]
) -> str:
    loc = _strip_union_tags(tuple(err["loc"]), data)
    key = _dotted(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], data)
        hint = f"valid keys here: {', '.join(valid)}" if valid else "remove it"
        return f"{path}: {key}: unknown key; {hint}"
    if kind == "missing":
        return f"{path}: {key}: required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(err.get("ctx", {}).get("discriminator", "'kind'")).strip("'")
        tag = err["input"].get(field) if isinstance(err.get("input"), dict) else None
        valid = err.get("ctx", {}).get("expected_tags", "")
        if kind == "union_tag_not_found":
            return f"{path}: {key}.{field}: required key is missing; expected one of {valid}"
        return f"{path}: {key}.{field}: {_short(tag)} is not valid: expected one of {valid}"
    value = "<from environment>" if loc in secret_paths else _short(err.get("input"))
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {key}: {value} is not valid: {msg}"


def _strip_union_tags(loc: tuple[Any, ...], data: Mapping[str, Any]) -> tuple[Any, ...]:
    """Drop the discriminator value pydantic inserts after a list index."""
    out: list[Any] = []
    node: Any = data
    prev_was_index = False
    for part in loc:
        if prev_was_index and isinstance(node, dict) and part in _tags(node):
            prev_was_index = False
            continue
        out.append(part)
        prev_was_index = isinstance(part, int)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _tags(node: Mapping[str, Any]) -> set[Any]:
    return {node.get(k) for k in _DISCRIMINATORS if isinstance(node.get(k), str)}


def _valid_keys(loc: tuple[Any, ...], data: Mapping[str, Any]) -> list[str]:
    model: type[BaseModel] | None = Settings
    node: Any = data
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        field = model.model_fields.get(part)
        node = node.get(part) if isinstance(node, dict) else None
        model = _model_of(field.annotation if field else None, node)
    if model is None:
        return []
    return [k for k in model.model_fields if k != "config_path"]


def _model_of(annotation: Any, node: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg, node)
        if m is not None:
            for disc in _DISCRIMINATORS:
                proc = node.get(disc) if isinstance(node, dict) else None
                tag = m.model_fields.get(disc)
                if proc is not None and tag is not None:
                    if proc in typing.get_args(tag.annotation):
                        return m
                    break
            else:
                return m
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Typed configs with every default in one dataclass, and YAML overrides checked against
the field types."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from nas_search.errors import UserError, missing_file

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigType = TypeVar("ConfigType", bound="DataclassInstance")


def _accepts(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(option, value) for option in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def config_from_dict(config_type: type[ConfigType], data: Mapping[str, Any], source: str = "config") -> ConfigType:
    """Build a config dataclass from a mapping, refusing unknown keys and wrong types with a
    one-line :class:`UserError` naming the key, the value and the expected type."""
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: expected a mapping of option names to values, got {type(data).__name__}")
    hints = typing.get_type_hints(config_type)
    known = {field.name for field in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key, value in data.items():
        if not _accepts(hints[key], value):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise UserError(f"{source}: option {key}={value!r} has the wrong type; expected {expected}")
    values = {key: (tuple(value) if isinstance(value, list) else value) for key, value in data.items()}
    return config_type(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples become lists, paths strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {field.name: plain(getattr(config, field.name)) for field in dataclasses.fields(config)}


def load_yaml_file(path: str | Path, what: str = "config") -> Any:
    """``yaml.safe_load`` a file, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {missing_file(path)}: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else "parse error"
        raise UserError(f"{what} file {path} is not valid YAML: {first}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} file {path} is not a text (YAML) file") from None
    except OSError as error:
        raise UserError(f"{what} file {path} cannot be read: {error.strerror or error}") from None


#: One value check of a config field: (field name, test, what is accepted; a function
#: returning it where the text needs a late import).
FieldCheck = tuple[str, Callable[[Any], bool], "str | Callable[[], str]"]


def check_fields(config: Any, checks: Iterable[FieldCheck], source: str) -> None:
    """Apply value checks (after :func:`config_from_dict`'s type checks): the first field
    that fails is a one-line :class:`UserError` naming ``source``, the field, its value and
    what is accepted."""
    for name, accepts, accepted in checks:
        value = getattr(config, name)
        if not accepts(value):
            raise UserError(f"{source}: {name}={value!r}; accepted: {accepted() if callable(accepted) else accepted}")


def positive_or_none(value: int | None) -> bool:
    """1 or more, or None (unset)."""
    return value is None or value >= 1

"""Reading the fields of a JSON object with errors that name the field.

Hand-written because the runtime is deliberately chalice + boto3 only (no
pydantic or jsonschema in the Lambda package), and the checks we need are few:
presence, type, length and unknown names.
"""

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import InvalidField, MissingField, UnknownField

_MISSING = object()


class Fields:
    """Typed access to one JSON object, e.g. a handler event or a request body.

    >>> Fields({"enabled": True}).boolean("enabled")
    True
    """

    def __init__(self, body: object, what: str = "body") -> None:
        if not isinstance(body, Mapping):
            raise InvalidField(what, f"expected a JSON object, got {_json_type(body)}")
        self._body: Mapping[str, Any] = body

    def reject_unknown(self, known: list[str]) -> None:
        unknown = [name for name in self._body if name not in known]
        if unknown:
            raise UnknownField(unknown, known)

    def has(self, name: str) -> bool:
        return name in self._body

    def raw(self, name: str) -> Any:
        return self._body.get(name)

    def string(self, name: str, *, required: bool = True, max_length: int | None = None) -> str | None:
        value = self._get(name, "a string", required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise InvalidField(name, f"expected a string, got {_json_type(value)}")
        if required and not value.strip():
            raise InvalidField(name, "expected a non-empty string")
        if max_length is not None and len(value) > max_length:
            raise InvalidField(name, f"expected at most {max_length} characters, got {len(value)}")
        return value

    def integer(self, name: str, *, minimum: int, maximum: int | None) -> int | None:
        value = self._get(name, "a whole number", False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(name, f"expected a whole number, got {_json_type(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise InvalidField(name, f"expected at least {minimum}{upper}, got {value}")
        return value

    def string_list(self, name: str, *, max_items: int) -> list[str]:
        value = self._get(name, "a list of strings", True)
        if not isinstance(value, list):
            raise InvalidField(name, f"expected a list of strings, got {_json_type(value)}")
        if not value:
            raise InvalidField(name, "expected at least one item")
        if len(value) > max_items:
            raise InvalidField(name, f"expected at most {max_items} items, got {len(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise InvalidField(f"{name}[{index}]", f"expected a non-empty string, got {_json_type(item)}")
        return value

    def names(self, name: str, *, pattern: "re.Pattern[str]", expected: str, max_items: int) -> tuple[str, ...]:
        """A list of names that each match ``pattern``, without repeats, in the order given."""
        names = self.string_list(name, max_items=max_items)
        for index, item in enumerate(names):
            if not pattern.fullmatch(item):
                raise InvalidField(f"{name}[{index}]", f"expected {expected}, got {item!r}")
        return tuple(dict.fromkeys(names))

    def boolean(self, name: str, *, default: bool | None = None) -> bool:
        value = self._get(name, "true or false", default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, bool):
            raise InvalidField(name, f"expected true or false, got {_json_type(value)}")
        return value

    def _get(self, name: str, expected: str, required: bool) -> Any:
        value = self._body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise MissingField(name, expected)
            return None
        return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__

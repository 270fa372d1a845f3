"""The base of the gateway's own request shapes: camelCase on the wire, strict types."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def integral(value: Any) -> Any:
    """A before-validator for the integers of strict models: JSON has one number type, and 150.0 is the
    integer 150 (as JSON Schema says); 150.5 stays a float, to be refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class CamelModel(BaseModel):
    # strict: a JSON value of the wrong type is refused, not coerced ("temperature": false is not 0.0)
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` inlined, to embed in another document (where `#/$defs/...` would
    point into that document, not the schema)."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined

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

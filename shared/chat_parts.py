"""The structured pieces of a chat request: content parts, tools, tool calls, response formats.

They validate the gateway's own body (camelCase: `imageUrl`, `toolCalls`, `toolChoice`) and OpenAI's
(snake_case, the same models by field name), and dump to OpenAI's wire shape, which is the
provider-neutral form `ProviderCall` carries (`to_wire`). A bad value is refused here, naming the
parameter: a tool schema that is not JSON Schema, an image URL that is neither https nor a base64
data URL, a `tool` message that answers no call.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import AfterValidator, Field, StrictBool, StrictStr, field_validator, model_validator

from shared.camel import CamelModel

MAX_TOOLS = 128  # OpenAI's limit
_TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class CacheControl(CamelModel):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class CacheControlled(CamelModel):
    # Anthropic's prompt-cache mark, kept on the part it was set on and sent to Anthropic untouched
    # (the OpenAI adapter leaves it out)
    cache_control: CacheControl | None = None


class TextPart(CacheControlled):
    type: Literal["text"]
    text: StrictStr


# an https URL, or a data URL of an image in strict base64 (what `image_source` accepts)
IMAGE_URL_PATTERN = (
    r"^(https://.+|data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)$"
)


class ImageUrl(CamelModel):
    url: StrictStr = Field(json_schema_extra={"pattern": IMAGE_URL_PATTERN})
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _https_or_data(cls, url: str) -> str:
        image_source(url)  # raises the reason
        return url


class ImagePart(CacheControlled):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(CamelModel):
    data: StrictStr  # base64
    format: Literal["wav", "mp3"]


class AudioPart(CamelModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(CamelModel):
    file_data: StrictStr | None = None  # base64
    file_id: StrictStr | None = Field(None, max_length=256)
    filename: StrictStr | None = Field(None, max_length=1024)


class FilePart(CamelModel):
    type: Literal["file"]
    file: FileRef


class RefusalPart(CamelModel):
    type: Literal["refusal"]
    refusal: StrictStr


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
# the parts only OpenAI takes: a request carrying one is routed to OpenAI
OPENAI_ONLY_PARTS = frozenset({"input_audio", "file"})


def image_source(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) for a data URL, None for an https URL; ValueError for anything else."""
    if url.startswith("https://"):
        return None
    found = _DATA_URL.fullmatch(url) if url.startswith("data:") else None
    if found is None:
        raise ValueError("an image URL must be an https URL or a base64 data URL (data:image/png;base64,...)")
    mime, data = found["mime"], found["data"]
    if mime not in IMAGE_TYPES:
        raise ValueError(f"image data must be of one of the types {', '.join(sorted(IMAGE_TYPES))}")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image data URL is not valid base64") from None
    return mime, data


def checked_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema if it is valid JSON Schema (draft 2020-12's meta-schema) whose integers fit 64 bits
    (what the queue's JSON carries), else ValueError."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    if not fits_64_bits(schema):
        raise ValueError("a number in the schema is out of the 64-bit integer range")
    return schema


def fits_64_bits(value: Any) -> bool:
    """Whether every integer in a JSON value fits in 64 bits."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return all(fits_64_bits(v) for v in value.values())
    if isinstance(value, list):
        return all(fits_64_bits(v) for v in value)
    return True


JsonSchema = Annotated[dict[str, Any], AfterValidator(checked_schema)]


class FunctionCall(CamelModel):
    name: StrictStr = Field(pattern=_TOOL_NAME)
    arguments: StrictStr


class ToolCall(CamelModel):
    """A call the assistant made, as a conversation sends it back."""

    id: StrictStr = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(CamelModel):
    name: StrictStr = Field(pattern=_TOOL_NAME)
    description: StrictStr | None = None
    parameters: JsonSchema | None = None
    strict: StrictBool | None = None


class Tool(CacheControlled):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(CamelModel):
    name: StrictStr = Field(pattern=_TOOL_NAME)


class NamedToolChoice(CamelModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class JsonSchemaFormat(CamelModel):
    name: StrictStr = Field(pattern=_TOOL_NAME)
    description: StrictStr | None = None
    schema_: JsonSchema | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(CamelModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is json_schema (as OpenAI requires)")
        return self

    def wire(self) -> dict[str, Any]:
        out = to_wire(self)
        if self.json_schema is not None and self.json_schema.schema_ is not None:
            out["json_schema"]["schema"] = out["json_schema"].pop("schema_")
        return out


def to_wire(model: CamelModel) -> dict[str, Any]:
    """A part, tool or format in OpenAI's wire shape (snake_case, unset fields left out)."""
    return model.model_dump(mode="json", exclude_none=True)

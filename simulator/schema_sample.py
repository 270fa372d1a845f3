"""A deterministic value that fits a JSON Schema: the arguments of a simulated tool call, the answer of a
simulated JSON-schema response."""

from __future__ import annotations

from typing import Any


def sample(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The first value a schema allows: every property of an object (strict outputs list them all), one
    item of an array, the first enum or const value, the first branch of anyOf/oneOf/allOf."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 16:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return sample(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(combinator)
        if isinstance(branches, list) and branches:
            return sample(branches[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: sample(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [sample(schema.get("items") or {}, root, depth + 1)]
    if kind == "string":
        return "sample"
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}

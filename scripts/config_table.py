"""Print the README's configuration table from the settings class (`python scripts/config_table.py`)."""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings import Settings


def _default(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "`{}`" if not value else "(see below)"
    return f"`{value}`"


def table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        rows.append(f"| `{name.upper()}` | {_default(default)} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())

"""PII masking: zero leaks over the corpus, zero changes to clean text, and the API around it."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest

from shared.pii import (
    PLACEHOLDERS,
    REDACTED,
    is_secret_key,
    luhn_ok,
    mask,
    mask_and_truncate,
    mask_value,
    truncate,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pii_corpus.jsonl"


def _load() -> list[dict[str, Any]]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ROWS = _load()
PII_ROWS = [r for r in ROWS if r["pii"]]
CLEAN_ROWS = [r for r in ROWS if not r["pii"]]
_NUMBERISH = re.compile(r"[\d\s().+\-/]+(?:\s*(?:ext\.?|x)\s*\d+)?", re.IGNORECASE)


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def test_corpus_size_and_shape() -> None:
    assert len(PII_ROWS) >= 250
    assert len(CLEAN_ROWS) >= 100
    for row in ROWS:
        assert set(row) == {"text", "pii"}
        for item in row["pii"]:
            assert item and item in row["text"], item


@pytest.mark.parametrize("row", PII_ROWS, ids=[f"pii-{i:03d}" for i in range(len(PII_ROWS))])
def test_no_leak(row: dict[str, Any]) -> None:
    masked = mask(row["text"])
    leaked = [item for item in row["pii"] if item in masked]
    assert not leaked, f"{leaked!r} survived in {masked!r}"
    # numbers must not survive in another spelling either (cards, phones, SSNs)
    masked_digits = _digits(masked)
    for item in row["pii"]:
        digits = _digits(item)
        if len(digits) >= 7 and _NUMBERISH.fullmatch(item):
            assert digits not in masked, f"{item!r} survived as {digits} in {masked!r}"
            assert digits not in masked_digits, f"digits of {item!r} survived in {masked!r}"


@pytest.mark.parametrize("row", CLEAN_ROWS, ids=[f"clean-{i:03d}" for i in range(len(CLEAN_ROWS))])
def test_clean_text_unchanged(row: dict[str, Any]) -> None:
    assert mask(row["text"]) == row["text"]


def test_mask_is_idempotent_over_corpus() -> None:
    for row in ROWS:
        once = mask(row["text"])
        assert mask(once) == once


@pytest.mark.parametrize(
    ("text", "placeholder"),
    [
        ("mail jane.doe+tag@mail.example.com today", "[EMAIL]"),
        ("write to john at example dot com today", "[EMAIL]"),
        ("call (555) 123-4567 today", "[PHONE]"),
        ("call +44 20 7946 0958 today", "[PHONE]"),
        ("call 555.123.4567 x12 today", "[PHONE]"),
        ("ship to 221B Baker Street, London NW1 6XE today", "[ADDRESS]"),
        ("card 4111 1111 1111 1111 today", "[CARD]"),
        ("ssn 078-05-1120 today", "[SSN]"),
        ("iban GB82 WEST 1234 5698 7654 32 today", "[IBAN]"),
        ("from 203.0.113.7 today", "[IP]"),
        ("from 2001:db8::8a2e:370:7334 today", "[IP]"),
        ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345 today", "[API_KEY]"),
        ("key AKIAIOSFODNN7EXAMPLE today", "[API_KEY]"),
        ("with Bearer abcdefghijklmnop123 today", "[TOKEN]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU today", "[TOKEN]"),
        ("password=hunter2hunter2 today", "[SECRET]"),
    ],
)
def test_typed_placeholders(text: str, placeholder: str) -> None:
    masked = mask(text)
    assert placeholder in masked
    assert masked.endswith(" today")


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",
        "4111-1111-1111-1112",
        "4111111111111112",
        "5555 5555 5555 4445",
        "3782 822463 10006",
    ],
)
def test_numbers_failing_luhn_are_left_alone(number: str) -> None:
    text = f"reference {number} in the ledger"
    assert mask(text) == text


def test_luhn() -> None:
    for good in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]:
        assert luhn_ok(good)
    for bad in ["4111111111111112", "1234567812345678", "", "4111-1111"]:
        assert not luhn_ok(bad)


def test_card_followed_by_cvv_is_masked_and_cvv_kept() -> None:
    assert mask("card 4111 1111 1111 1111 123 ok") == "card [CARD] 123 ok"


def test_secret_values_keep_their_keys() -> None:
    assert mask('OPENAI_API_KEY="sk-abcdefghijklmnopqrstuvwx12"') == 'OPENAI_API_KEY="[API_KEY]"'
    assert mask("Authorization: Bearer abc123def456ghi") == "Authorization: Bearer [TOKEN]"
    assert mask("postgres://app:pw123456@db.example.com/x") == "postgres://[SECRET]@db.example.com/x"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('"api_key": "sk-live-0123456789abcdefABCDEF', "0123456789abcdefABCDEF"),  # cut-off quote
        ('"client_secret": "70pkshNgQbfo52lNaTyld9VxkJ4AAq8O', "70pkshNgQbfo52lNaTyld9VxkJ4AAq8O"),
        ("redis://:s3cr3tRedisPW", "s3cr3tRedisPW"),  # cut-off URL, no "@"
        ("IBAN BE68 5390 0754 7034 HF_TOKEN follows", "BE68 5390 0754 7034"),
        ("Cookie: a=b; -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY-----", "MIIEvQIBADAN"),
        ("::ffff:192.0.2.55 connected", "192.0.2.55"),
        ("0800-89-1131 is the UK number", "0800-89-1131"),
        ("Hauptstr. 7, 10115 Berlin", "Hauptstr. 7"),
    ],
)
def test_edge_cases_do_not_leak(text: str, secret: str) -> None:
    assert secret not in mask(text)


def test_code_that_mentions_secrets_is_not_masked() -> None:
    for text in [
        'api_key = os.environ["OPENAI_API_KEY"]',
        "token = get_token()",
        "secret = None",
        "def login(user: str, password: str) -> bool: ...",
        'headers = {"Authorization": f"Bearer {token}"}',
        '{"max_tokens": 256, "usage": {"total_tokens": 1658}}',
        "client = Client(api_key=api_key, timeout=30.0)",
        "def sign(self, private_key: SSHCertPrivateKeyTypes) -> SSHCertificate:",
        "self.token = nextchar",
        '_AUTHORIZATION = "authorization"',
        "Password: must be at least 12 characters.",
    ]:
        assert mask(text) == text


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "Authorization",
        "Proxy-Authorization",
        "api_key",
        "apiKey",
        "x-api-key",
        "X-Api-Key",
        "OPENAI_API_KEY",
        "password",
        "db_password",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refreshToken",
        "cookie",
        "Set-Cookie",
        "session_id",
        "credentials",
        "private_key",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "prompt_tokens", "token_usage", "model", "author", "keyword", "content"])
def test_non_secret_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_mask_value_nested() -> None:
    doc = {
        "model": "gpt-4",
        "max_tokens": 256,
        "temperature": 0.7,
        "stream": False,
        "user": None,
        "headers": {
            "Authorization": "Bearer abcdefghijklmnop",
            "x-api-key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "Cookie": "sid=abc; theme=dark",
            "Content-Type": "application/json",
        },
        "credentials": {"username": "svc", "password": "hunter2"},
        "password": 12345,
        "messages": [
            {"role": "user", "content": "I'm at jane@example.com or (555) 123-4567"},
            {"role": "assistant", "content": ("ok", "call 555-123-4567")},
        ],
        "metadata": {"jane@example.com": "owner", "phone": "5551234567", "card_number": 4111111111111111},
        "raw": b"from 203.0.113.9",
        "big": 4111111111111111,
    }
    original = json.dumps(doc, default=repr, sort_keys=True)
    out = mask_value(doc)
    assert json.dumps(doc, default=repr, sort_keys=True) == original  # input untouched
    assert out["model"] == "gpt-4" and out["max_tokens"] == 256 and out["temperature"] == 0.7
    assert out["stream"] is False and out["user"] is None
    assert out["headers"]["Authorization"] == REDACTED
    assert out["headers"]["x-api-key"] == REDACTED
    assert out["headers"]["Cookie"] == REDACTED
    assert out["headers"]["Content-Type"] == "application/json"
    assert out["credentials"] == REDACTED
    assert out["password"] == REDACTED
    assert out["messages"][0]["content"] == "I'm at [EMAIL] or [PHONE]"
    assert out["messages"][1]["content"] == ("ok", "call [PHONE]")
    assert out["metadata"] == {"[EMAIL]": "owner", "phone": "[PHONE]", "card_number": "[CARD]"}
    assert out["raw"] == "from [IP]"
    assert out["big"] == "[CARD]"
    dumped = json.dumps(out)
    for secret in ["abcdefghijklmnop", "sk-ant", "sid=abc", "hunter2", "jane@", "555", "4111"]:
        assert secret not in dumped


def test_mask_value_dumps_models_and_dataclasses() -> None:
    from dataclasses import dataclass

    from pydantic import BaseModel

    class Message(BaseModel):
        role: str
        content: str

    @dataclass
    class Call:
        api_key: str
        note: str

    out = mask_value({"m": Message(role="user", content="mail me: ann@example.com"), "c": Call("sk-x", "ok")})
    assert out == {"m": {"role": "user", "content": "mail me: [EMAIL]"}, "c": {"api_key": REDACTED, "note": "ok"}}


def test_mask_value_truncates_strings() -> None:
    out = mask_value({"content": "x" * 100, "items": ["y" * 50]}, limit=10)
    assert out["content"] == "x" * 10 + "…[truncated 90 chars]"
    assert out["items"] == ["y" * 10 + "…[truncated 40 chars]"]


def test_mask_value_survives_deep_nesting() -> None:
    doc: Any = "jane@example.com"
    for _ in range(200):
        doc = [doc]
    out = mask_value(doc)
    while isinstance(out, list):
        out = out[0]
    assert "jane@" not in out


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("a" * 10, 10) == "a" * 10
    assert truncate("a" * 1234 + "b" * 1234, 1234) == "a" * 1234 + "…[truncated 1234 chars]"
    assert truncate("abc", 0) == "…[truncated 3 chars]"
    with pytest.raises(ValueError):
        truncate("abc", -1)


def test_truncate_does_not_split_a_placeholder() -> None:
    text = "hello [EMAIL] world"
    for limit in range(7, 13):
        assert "[EMA" not in truncate(text, limit).replace("[EMAIL]", "")


def test_mask_and_truncate_masks_before_cutting() -> None:
    text = "x" * 95 + " john.smith@example.com " + "y" * 1000
    out = mask_and_truncate(text, 100)
    assert "john" not in out and "smith" not in out and "example" not in out
    assert out.startswith("x" * 95)
    assert out.endswith("chars]")
    assert mask_and_truncate("call 555-123-4567", None) == "call [PHONE]"
    assert mask_and_truncate("call 555-123-4567", 100) == "call [PHONE]"


def test_mask_and_truncate_counts_dropped_characters() -> None:
    text = "a" * 50 + "b" * 5000 + " " + "c" * 5000
    out = mask_and_truncate(text, 50)
    dropped = int(re.search(r"truncated (\d+) chars", out).group(1))  # type: ignore[union-attr]
    assert out.startswith("a" * 50 + "…")
    assert dropped == len(text) - 50


def test_placeholders_are_documented() -> None:
    for row in PII_ROWS:
        for found in re.findall(r"\[[A-Z_]+\]", mask(row["text"])):
            assert found in PLACEHOLDERS or found in row["text"]


ADVERSARIAL = {
    "letters": "a" * 1_000_000,
    "digits": "1" * 1_000_000,
    "spaced digits": "1 " * 500_000,
    "dashed digits": "1-" * 500_000,
    "dotted digits": "1." * 500_000,
    "card-like groups": " ".join(["4111"] * 200_000),
    "at signs": "a@" * 500_000,
    "dotted local part": "a." * 500_000 + "@example.com",
    "long domain": "x@" + "a." * 500_000,
    "plus signs": "+1 " * 333_333,
    "colons": ":" * 1_000_000,
    "hex and colons": "a:" * 500_000,
    "double colons": "a::" * 333_333,
    "jwt prefixes": "eyJ" * 333_333,
    "jwt-like": "eyJaaaaaaaaa." * 76_923,
    "long key": "sk-" + "a" * 1_000_000,
    "dashes": "-" * 1_000_000,
    "bearer": "Bearer " * 142_857,
    "address-like": "12 Main " * 125_000,
    "parentheses": "(555) " * 166_666,
    "password keys": "password: " * 100_000,
    "cookie line": "Cookie: " + "a" * 1_000_000,
    "open quote": 'password: "' + "a" * 1_000_000,
    "ssn context": "SSN 1 " * 166_666,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_is_linear(name: str) -> None:
    text = ADVERSARIAL[name]
    start = time.perf_counter()
    mask(text)
    assert time.perf_counter() - start < 2.0, name


def test_random_noise_is_linear_and_never_crashes() -> None:
    rng = random.Random(7)
    alphabet = "0123456789 .-+():@_kKwWcCzZJxbBVvG%aeAS\n'\"=,/[]{}\\"
    text = "".join(rng.choice(alphabet) for _ in range(1_000_000))
    start = time.perf_counter()
    out = mask(text)
    assert time.perf_counter() - start < 2.0
    assert isinstance(out, str)

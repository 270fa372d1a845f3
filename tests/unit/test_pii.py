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


# -- issue 14 item 8: secrets that slipped past, and their neighbours ----------------------------------

_AWS_ID, _AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("text", "secret", "placeholder"),
    [
        # IBANs in lower or mixed case, with or without spaces
        ("wire it to de89 3704 0044 0532 0130 00 please", "3704 0044 0532 0130", "[IBAN]"),
        ("iban: de89370400440532013000", "370400440532013000", "[IBAN]"),
        ("iban Gb82 West 1234 5698 7654 32 ok", "1234 5698 7654", "[IBAN]"),
        ("iban be68 5390 0754 7034 ok", "5390 0754 7034", "[IBAN]"),
        ("pay nl91abna0417164300 now", "0417164300", "[IBAN]"),
        # AWS: the secret access key next to its key id, whatever the separator; temporary ids
        (f"creds {_AWS_ID} {_AWS_SECRET} done", _AWS_SECRET, "[SECRET]"),
        (f"{_AWS_ID}:{_AWS_SECRET}", _AWS_SECRET, "[SECRET]"),
        (f"bob,,{_AWS_ID},{_AWS_SECRET}\n", _AWS_SECRET, "[SECRET]"),
        (f'{{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "Key": "{_AWS_SECRET}"}}', _AWS_SECRET, "[SECRET]"),
        (f'{{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "SecretAccessKey": "{_AWS_SECRET}"}}', _AWS_SECRET, "[SECRET]"),
        (f"aws_access_key_id = {_AWS_ID}\naws_secret_access_key = {_AWS_SECRET}\n", _AWS_SECRET, "[SECRET]"),
        ("temporary id ASIAIOSFODNN7EXAMPLE ok", "ASIAIOSFODNN7EXAMPLE", "[API_KEY]"),
        (f"id {_AWS_ID} (owner ann@example.com), secret: {_AWS_SECRET}", "ann@example.com", "[SECRET]"),
        # code hosts and SaaS tokens
        ("gho_1234567890abcdefghijABCDEFGHIJ123456", "1234567890abcdefghij", "[API_KEY]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", "abcdefghijklmnop", "[API_KEY]"),
        ("glptt-0123456789abcdef01234567 ok", "0123456789abcdef", "[API_KEY]"),
        ("glrt-0123456789abcdefABCD ok", "0123456789abcdef", "[API_KEY]"),
        ("xoxs-123456789012-1234567890123-AbCdEfGhIj", "AbCdEfGhIj", "[TOKEN]"),
        (
            "post to https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/AbCdEfGhIjKlMnOpQrStUvWx ok",
            "AbCdEfGhIjKl",
            "[TOKEN]",
        ),
        ("rk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc", "[API_KEY]"),
        ("whsec_4eC39HqLyjWDarjtT1zdp7dcABCDEF", "4eC39HqLyjWDarjtT1zdp7dc", "[API_KEY]"),
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IF"
            "suFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;EndpointSuffix=core.windows.net",
            "Eby8vdM02xNOcq",
            "[API_KEY]",
        ),
        (
            "GET https://acct.blob.core.windows.net/c/b?sv=2021-06-08&sr=b&sig=abcDEF1234567890abcDEF12345%3D ok",
            "abcDEF1234567890",
            "[SECRET]",
        ),
        ("https://maps.example.com/api/geocode?address=x&key=abcdef123456xyz&x=1", "abcdef123456xyz", "[SECRET]"),
        ("twilio SK0123456789abcdef0123456789abcdef ok", "0123456789abcdef0123456789abcdef", "[API_KEY]"),
        (
            "account AC0123456789abcdef0123456789abcdef:fedcba9876543210fedcba9876543210",
            "fedcba9876543210fedcba9876543210",
            "[SECRET]",
        ),
        ("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", "TwL2iGABf9DHoTf", "[API_KEY]"),
        ("dop_v1_" + "0123456789abcdef" * 4, "0123456789abcdef", "[API_KEY]"),
        ("shpat_0123456789abcdef0123456789abcdef", "0123456789abcdef", "[API_KEY]"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "b3Blbn",
            "[SECRET]",
        ),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF0000000000\n-----END PGP PRIVATE KEY BLOCK-----",
            "lQOYBF",
            "[SECRET]",
        ),
        ("sk-ant-admin01-abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnop", "[API_KEY]"),
        # connection strings: a password holding "@", every scheme, ADO.NET pairs
        ("postgres://user:p@ss@db.internal/app", "ss@db", "[SECRET]@db.internal/app"),
        ("mongodb+srv://admin:Mongo%40Pass1@cluster0.abcd.mongodb.net/db", "Mongo%40Pass1", "[SECRET]"),
        ("amqp://guest:rabbitpw@mq:5672/", "rabbitpw", "[SECRET]"),
        ("rediss://default:s3cretpw@cache:6379", "s3cretpw", "[SECRET]"),
        ("Server=tcp:db.example.com;Database=app;User Id=sa;Password=Sup3rS3cret!;", "Sup3rS3cret!", "[SECRET]"),
    ],
)
def test_more_secret_formats_are_masked(text: str, secret: str, placeholder: str) -> None:
    masked = mask(text)
    assert secret not in masked, masked
    assert placeholder in masked, masked
    assert mask(masked) == masked


@pytest.mark.parametrize(
    "text",
    [
        # IBAN-shaped but not one: wrong checksum, no IBAN country, inside a word, a hash
        "iban: de89370400440532013001",
        "model id42 dead beef cafe 0000 1234",
        "see abde89370400440532013000 for the build",
        "commit de4f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f",
        "ab12 cdef ghij klmn opqr",
        "mp3 file at 1280 kbps",
        # 40-character strings that are not next to an AWS key id
        "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 ok",
        "path a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t ok",
        "AKIA is the prefix of AWS key ids, followed by 16 characters",
        # words that start like token prefixes, Twilio-like words, query strings without secrets
        "the shpat_ prefix, dop_v1_ and whsec_ are documented prefixes",
        "ACME Corp and SKU numbers SK-1234 are fine",
        "https://example.com/search?q=monkey&key=&page=2",
        "https://example.com/?lang=en&sort=key",
        "keyboard shortcuts: press ?key=value to filter",
        "https://hooks.slack.com/services/ is the webhook host",
        "postgres://db.internal:5432/app and redis://cache:6379/0",
        "Passphrase: use four random words.",
    ],
)
def test_secret_lookalikes_are_left_alone(text: str) -> None:
    assert mask(text) == text


def test_aws_secret_a_few_words_after_its_id() -> None:
    text = f"id {_AWS_ID} (ann@example.com) and the secret {_AWS_SECRET}."
    assert mask(text) == "id [API_KEY] ([EMAIL]) and the secret [SECRET]."
    # a hex digest or a path of that length after a key id is no secret key
    for other in ["2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "home/alice/projects/gateway/src/shared/x"]:
        assert mask(f"{_AWS_ID} at {other}") == f"[API_KEY] at {other}"

"""PII and secret masking for privacy-compliant logging.

Every prompt and completion that is logged goes through here first, so two things matter:
nothing personal or secret may survive, and it must be cheap enough to run on every request.

Public API
----------
- ``mask(text)``: replace each finding with a typed placeholder (``[EMAIL]``, ``[PHONE]``,
  ``[ADDRESS]``, ``[CARD]``, ``[SSN]``, ``[IBAN]``, ``[IP]``, ``[API_KEY]``, ``[TOKEN]``,
  ``[SECRET]``).
- ``truncate(text, limit)``: keep ``limit`` characters and append ``…[truncated N chars]``.
- ``mask_and_truncate(text, limit)``: both, masking first (so a cut can never leave half an
  email behind) and masking only the part that can survive the cut (plus a margin).
- ``mask_value(obj, limit)``: walk dicts / lists / tuples and mask every string; values of dict
  keys that name secrets (``authorization``, ``api_key``, ``x-api-key``, ``password``, ``token``,
  ``cookie``...) are replaced whole by ``[REDACTED]``.

How it works
------------
One precompiled regex, an alternation of every detector, is searched left to right. It starts
with one branch per *anchor* character (digits, ``+ ( : @ % - _`` and a few letters that are
rare in prose but occur in every keyword or key prefix looked for), so the engine derives a
first-character set and skips everything else in C; each detector ends in an empty named
group, so ``m.lastgroup`` names the detector that matched. Each detector has a small validator
(Luhn and issuer prefixes for cards, octets / ``ipaddress`` for IPs, mod-97 for IBANs, digit
counts and date shapes for phones, code-vs-secret heuristics for ``key=value``). A validator
may reject a match (the other detectors then get their turn at that position), keep only a
prefix of it, or move its start back (an email is found at its "@").

Every repetition is bounded or possessive and every detector that scans a run starts only at
the beginning of that run, so masking is linear even on adversarial input (see
tests/unit/test_pii.py); `bench/pii_mask.py` measures its cost per kilobyte.

Secrets found by their shape: OpenAI / Anthropic (``sk-``), AWS key ids (``AKIA``/``ASIA``) and the
secret key that follows one (right after it, or random-looking within a few words), GitHub
(``gh?_``, ``github_pat_``), GitLab (``glpat-`` and kin), Slack (``xox?-``, webhook URLs), Stripe
(``sk_live_``, ``rk_``, ``whsec_``), Google (``AIza``), SendGrid (``SG.``), npm, Hugging Face,
Shopify, DigitalOcean, Twilio (``SK`` keys; an ``AC`` account's token that follows it), JWTs, PEM
private keys, passwords in URLs (``scheme://user:pass@``, up to the last "@"), ``sig=``/``key=`` in
query strings; by their key: ``password=``, ``pwd=``, ``secret``, ``token``, ``*_key`` (Azure's
``AccountKey=`` too), ``Authorization``, cookies. IBANs are found in any case, checked against
their country's length and mod-97.

What is deliberately *not* masked: plain numbers (years, prices, counts, versions, dates, ISO
timestamps, ports, ids), bare 10-digit numbers without phone context (they are mostly Unix
timestamps and order ids), UUIDs, hashes, loopback / unspecified IPs (127.x, 0.0.0.0, ::1),
netmasks (255.x), 16-digit numbers failing Luhn, and lowercase prose addresses
("3 step way to ..."). Names of people are not detected (that needs NER).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "PLACEHOLDERS",
    "REDACTED",
    "is_secret_key",
    "luhn_ok",
    "mask",
    "mask_and_truncate",
    "mask_value",
    "truncate",
]

REDACTED: Final = "[REDACTED]"
PLACEHOLDERS: Final = frozenset(
    {
        "[EMAIL]",
        "[PHONE]",
        "[ADDRESS]",
        "[CARD]",
        "[SSN]",
        "[IBAN]",
        "[IP]",
        "[API_KEY]",
        "[TOKEN]",
        "[SECRET]",
        REDACTED,
    }
)

# --------------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------------
# The master regex is one branch per *anchor* character, each starting with that character, so
# the engine's search skips every other character in C at a few ns each (a regex that can start
# anywhere costs ~20 ns per character, ~40 µs on 2 KB before doing anything useful). The anchors
# are the digits, ``+ ( : @ % - _`` and a few letters that are rare in prose but occur in every
# keyword or key prefix looked for (k: token, key, cookie, sk-, AKIA; w: password, pwd, jwt;
# c: secret, credentials; z: authorization, AIza; ...). Each detector is written *after* its
# anchor character: look-behinds see what came before it, and a validator may move the start of
# the finding back (an email is found at its "@", an IBAN at its first digit, "sk-..." at "k").

_EXT = r"(?:[ \t]*,?[ \t]*(?:ext\.?|Ext\.?|EXT\.?|extension|x|X|\#)[ \t]*\d{1,6})?"

# --- after a digit that starts a word ---------------------------------------------------------
_WORD_START_DIGIT = r"(?<![\w][0-9])(?<![0-9][.\-][0-9])"
_CARD_CONTIGUOUS = r"\d{12,18}(?!\d)"
_CARD_GROUPED = (
    r"\d\d\d[ \-]\d{4}[ \-]\d{4}[ \-]\d{4}(?:[ \-]\d{3})?(?!\d)"  # 4-4-4-4(-3)
    r"|\d\d\d[ \-]\d{6}[ \-]\d{4,5}(?!\d)"  # Amex 4-6-5, Diners 4-6-4
)
_SSN = r"\d\d-\d\d-\d{4}(?![\d\-]|\.\d)"
_IPV4_TAIL = r"\.\d{1,3}+\.\d{1,3}+\.\d{1,3}+(?!\d|\.\d)"
_PHONE_US_TAIL = r"\d{3}[ .\-]\d{4}" + _EXT + r"(?!\w|[.\-]\d)"
_PHONE_US = r"\d\d[ .\-]" + _PHONE_US_TAIL
_PHONE_US_1 = r"[ .\-](?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])" + _PHONE_US_TAIL + "|" + r"\(\d{3}\)[ .\-]?" + _PHONE_US_TAIL
_PHONE_NAT = r"\d\d{0,3}(?:[ ./\-]\d{2,8}){1,4}" + _EXT + r"(?![\w:]|[.\-/]\d)"
# digits that are a phone number or an SSN only if a keyword ("phone:", "SSN") comes before
_BARE_CONTIGUOUS = r"\d{6,14}(?!\d)" + _EXT
_BARE_GROUPED = (
    r"(?:\d\d[ .\-]\d{4}(?:\d{3})?|\d\d\d\d?[ .\-]\d{5,6}|[ .\-]\d{3}[ .\-]\d{3,4}"
    r"|\d\d{0,2}[ .\-]\d{3}[ .\-]\d{3,4}|\d\d[ \-]\d\d[ \-]\d{4})"
    r"(?![\d]|[.\-]\d)" + _EXT
)

_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    r"|Terrace|Ter|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Crescent|Cres|Close|Mews"
    r"|Gardens|Grove|Plaza|Trail|Trl|Alley|Expressway|Freeway|Turnpike|Causeway"
)
_UNIT = (
    r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building|Dept|\#)"
    r"\.?[ \t]*\#?[A-Za-z0-9\-]{1,6}(?![A-Za-z0-9]))?"
)
_CITY = r"(?:,[ \t]*[A-Z][a-z][A-Za-z.'\-]*(?:[ \t]+[A-Z][a-z][A-Za-z.'\-]*){0,2})?"
_POSTCODE = (
    r"(?:,?[ \t]*(?:[A-Z]{2}[ \t]+)?(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}"
    r"|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d)(?![A-Za-z0-9])|,[ \t]*[A-Z]{2}(?![A-Za-z]))?"
)
_COUNTRY = r"(?:,?[ \t]*(?:USA|U\.S\.A\.|United[ \t]States|UK|United[ \t]Kingdom|Canada))?"
_ADDR_TAIL = _UNIT + _CITY + _POSTCODE + _COUNTRY
_ADDR_EN = (
    r"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ \t]+)?"
    r"(?:(?:(?:St|Mt|Ft|Pt|[A-Z])\.|[A-Z][A-Za-z'\u2019\-]*|\d{1,3}(?:st|nd|rd|th))[ \t]+){1,4}"
    rf"(?:{_STREET_SUFFIX})\.?(?![A-Za-z])"
    r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\.?(?![A-Za-z]))?" + _ADDR_TAIL
)
_FR_ART = r"(?:de|du|des|la|le|les|d'|l'|d\u2019|l\u2019)"
_ADDR_FR = (
    r"(?:bis[ \t]+)?(?:[Rr]ue|[Aa]venue|[Aa]v\.|[Bb]oulevard|[Bb]d|[Pp]lace|[Aa]ll[ée]e|[Cc]hemin"
    r"|[Ii]mpasse|[Qq]uai|[Rr]oute|[Cc]ours)[ \t]+"
    rf"(?:{_FR_ART}[ \t]*){{0,3}}[A-ZÀ-Ý][\w'\u2019\-]+(?:[ \t]+(?:{_FR_ART}|[A-ZÀ-Ý][\w'\u2019\-]+)){{0,4}}"
    r"(?:,?[ \t]+\d{5}[ \t]+[A-ZÀ-Ý][\w'\u2019\-]+)?"
)
# "221B Baker Street, London NW1 6XE", "1585 Broadway", "12 rue de Rivoli, 75001 Paris"
_ADDRESS_NUMBER_FIRST = (
    r"\d{0,4}+[A-Za-z]?(?:[\-/]\d{1,5}+[A-Za-z]?)?,?[ \t]++"
    rf"(?:{_ADDR_EN}|Broadway(?![A-Za-z]){_ADDR_TAIL}|{_ADDR_FR})"
)
# the rest of the number, then a space and a capital, a digit (5th Ave) or a French street type
_ADDRESS_PREFILTER = (
    r"(?=\d{0,4}+[A-Za-z]?(?:[\-/]\d{1,5}+[A-Za-z]?)?,?[ \t]++(?:bis[ \t]+)?"
    r"(?:[A-Z]|\d{1,3}(?:st|nd|rd|th)[ \t]|rue |route |avenue |av\. |boulevard |bd |place |all[ée]e |chemin"
    r" |impasse |quai |cours ))"
)
# German: the house number comes after the street ("Hauptstraße 5"): found at the number
_ADDR_DE = (
    r"(?<=(?:ße|se|r\.|eg|tz|ee)[ \t][0-9]|tr\.[0-9])(?<=(?:aße|sse|tr\.|weg|Weg|atz|lee)[ \t][0-9]|str\.[0-9])"
    r"\d{0,3}[a-z]?(?![\w])(?:,?[ \t]*\d{5}[ \t]+[A-ZÄÖÜ][\w\-]+)?"
)
_DE_STREET_BEFORE = re.compile(
    r"[A-ZÄÖÜ][a-zäöüß]{1,30}(?:(?:straße|strasse|str\.|gasse|weg|platz|allee)[ \t]*"
    r"|(?:er)?[ \t]+(?:Straße|Strasse|Str\.|Gasse|Weg|Platz|Allee)[ \t]+)\Z"
)
# Spanish / Italian: keyword, name, number ("Calle Mayor 10", "Via Roma 1")
_ROMANCE_TAIL = (
    r"[ \t]+(?:(?:de|del|della|delle|dei|di|da|do|dos|das|la|el|los|las)[ \t]+){0,2}"
    r"[A-ZÀ-Ý][\w'\u2019\-]+(?:[ \t]+[A-ZÀ-Ý][\w'\u2019\-]+){0,3},?[ \t]+(?:n[º°o]\.?[ \t]*)?"
    r"\d{1,4}[A-Za-z]?(?![\w])(?:,?[ \t]*\d{5}[ \t]+[A-ZÀ-Ý][\w'\u2019\-]+)?"
)

# --- after a digit preceded by two letters: an IBAN, in any case ("de89 3704 ...") -----------
_IBAN = r"\d(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])"

# --- after punctuation ------------------------------------------------------------------------
_PHONE_INTL = r"(?:\d{1,3}(?:[ .\-]?\(\d{1,4}\)[ .\-]?\d{1,8}|[ .\-]\d{1,8}){1,7}|\d{8,15})" + _EXT + r"(?!\d|\.\d)"
_PHONE_PAREN = r"\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}" + _EXT + r"(?!\w|[.\-]\d)"
# user:password@ up to the last "@" before the host (a password may hold one); no "@" at all: a
# cut-off line
_URL_CREDS = r"//[^\s/:@]{0,128}:(?:[^\s/]{1,256}@|[^\s/@]{1,256}(?=[\s\"'<>]|\Z))"
_IPV6_FIRST_COLON = (
    "(?:"
    + "|".join(rf"(?<=(?<![\w:])[0-9A-Fa-f]{{{n}}}:)" for n in range(1, 5))
    + r")(?=(?:[0-9A-Fa-f]{1,4}:){0,6}:|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){6})"
)
_EMAIL_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
_PRIVATE_KEY = (
    r"----BEGIN[ A-Z]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:[\s\S]{0,16384}?-----END[ A-Z]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s]{0,16384})"
)

# --- after a rare letter: keywords (the value after them is the secret) and key prefixes -----
_KEY_GUARD = r"(?![A-Za-z0-9])(?=(?:\\?[\"'])?[ \t]*[:=])"  # "key": / key= / key :
_KEY_PREFIXES = ("api", "secret", "access", "private", "signing", "client", "master", "account")
_KEY_WORD = r"[Ee][Yy](?:" + "|".join(f"(?<=(?i:{p}{sep}key))" for p in _KEY_PREFIXES for sep in ("", "_", "-")) + ")"

_Handler = Callable[[re.Match[str], str], tuple[int, int, str] | None]


@dataclasses.dataclass(frozen=True)
class _D:
    """A detector: what follows its anchor character; ``only`` limits the anchors."""

    kind: str
    pattern: str
    only: str = ""


@dataclasses.dataclass(frozen=True)
class _G:
    """Detectors behind a shared guard (look-arounds that reject most anchors cheaply)."""

    guard: str
    items: tuple[_D | _G, ...]


# Detectors start with a literal or a character class (so the engine's branch fast path skips
# them with one comparison) and put their look-behinds after it. Order is priority.
_WORD_START_DIGIT = r"(?<![\w][0-9])(?<![0-9][.\-][0-9])"
_DIGITS = _G(
    r"(?<![0-9_][0-9])",  # one look-behind rejects most digits inside a number
    (
        _G(
            # after a lowercase letter only an IBAN starts ("de89 ..."), below
            r"(?<![a-z][0-9])" + _WORD_START_DIGIT,
            (
                _G(
                    r"(?=\d{0,4}+[ .\-/(])",  # a separator within the first five characters
                    (
                        _D("card", _CARD_GROUPED, "23456"),
                        _D("ssn", _SSN),
                        _D("ipv4", _IPV4_TAIL),
                        _D("ipv4", r"\d\d?+" + _IPV4_TAIL),
                        _D("phone_us", _PHONE_US_1, "1"),
                        _D("phone_us", _PHONE_US),
                        _D("phone_nat", _PHONE_NAT, "0"),
                        _D("bare_number", _BARE_GROUPED),
                    ),
                ),
                _G(
                    r"(?=\d{6})",  # seven digits or more in a row
                    (
                        _D("card", _CARD_CONTIGUOUS, "23456"),
                        _D("bare_number", _BARE_CONTIGUOUS),
                    ),
                ),
                _G(_ADDRESS_PREFILTER, (_D("addr", _ADDRESS_NUMBER_FIRST),)),
                _D("addr_de", _ADDR_DE),
            ),
        ),
        # the country code starts a word: "de89 ...", "GB82 ...", not "abde89..."
        _G(r"(?<=[A-Za-z][A-Za-z][0-9])(?<![A-Za-z0-9][A-Za-z][A-Za-z][0-9])", (_D("iban", _IBAN),)),
    ),
)
_SPEC: Final[tuple[tuple[str, _G], ...]] = (
    ("0123456789", _DIGITS),
    ("+", _G(r"(?<![\w+)]\+)", (_D("phone_intl", _PHONE_INTL),))),
    ("(", _G(r"(?<![\w(]\()", (_D("phone_paren", _PHONE_PAREN),))),
    (
        ":",
        _G(
            "",
            (
                _D("url_creds", _URL_CREDS),
                # the first colon of an address: a hex group that starts a word before it, and
                # a "::" or seven groups after it ("12:30:45" and MAC addresses never qualify)
                _D("ipv6", _IPV6_FIRST_COLON),
                _D("ipv6", r":(?<![\w:]::)(?=[0-9A-Fa-f])"),  # a leading "::" ("::ffff:...")
            ),
        ),
    ),
    ("@", _G("", (_D("email", _EMAIL_DOMAIN),))),
    ("%", _G("", (_D("email", "40" + _EMAIL_DOMAIN),))),  # URL-encoded "@"
    (
        "-",
        _G(
            "",
            (
                _D("private_key", _PRIVATE_KEY),
                # GitLab: personal, pipeline trigger, CI build and OAuth app tokens; runner, deploy
                # and feed tokens (one prefix length per detector: the start is found by it)
                _D(
                    "apikey_b5",
                    r"[A-Za-z0-9_\-](?<=gl(?:pat|ptt|cbt|oas)-.)(?<![\w]gl(?:pat|ptt|cbt|oas)-.)[A-Za-z0-9_\-]{19,63}",
                ),
                _D("apikey_b4", r"[A-Za-z0-9_\-](?<=gl(?:rt|dt|ft)-.)(?<![\w]gl(?:rt|dt|ft)-.)[A-Za-z0-9_\-]{19,63}"),
            ),
        ),
    ),
    (
        "_",
        _G(
            "",
            (
                _D(
                    "apikey_b3",
                    r"[A-Za-z0-9](?<=gh[pousr]_.)(?<![\w]gh[pousr]_.)[A-Za-z0-9]{29,254}",
                ),
                _D("apikey_b6", r"pat_(?<=github_pat_)(?<![\w]github_pat_)[A-Za-z0-9_]{22,255}"),
                _D("apikey_b2", r"[A-Za-z0-9](?<=hf_.)(?<![\w]hf_.)[A-Za-z0-9]{29,63}"),
                _D(
                    "apikey_b3",
                    r"[A-Za-z0-9](?<=npm_.)(?<![\w]npm_.)[A-Za-z0-9]{35}(?![A-Za-z0-9])",
                ),
                # Stripe webhook secrets; Shopify access, custom app, partner and shared secrets
                _D("apikey_b5", r"[A-Za-z0-9](?<=whsec_.)(?<![\w]whsec_.)[A-Za-z0-9]{23,254}"),
                _D(
                    "apikey_b5",
                    r"[a-fA-F0-9](?<=shp(?:at|ca|pa|ss)_.)(?<![\w]shp(?:at|ca|pa|ss)_.)[a-fA-F0-9]{31}(?![A-Za-z0-9])",
                ),
                # DigitalOcean personal, OAuth and refresh tokens (found at the second "_")
                _D(
                    "apikey_b6",
                    r"[a-f0-9](?<=do[opr]_v1_.)(?<![\w]do[opr]_v1_.)[a-f0-9]{63}(?![A-Za-z0-9])",
                ),
            ),
        ),
    ),
    (
        "kK",
        _G(
            "",
            (
                _D(
                    "apikey_b1",
                    r"-(?<=sk-)(?<![\w\-]sk-)(?:proj-|ant-(?:api|admin)\d\d-|svcacct-|admin-)?"
                    r"[A-Za-z0-9_\-]{20,512}",
                    "k",
                ),
                _D(
                    "apikey_b1",
                    r"_(?:live|test)_(?<=[spr]k_...._)(?<![\w][spr]k_...._)[A-Za-z0-9]{10,256}",
                    "k",
                ),
                _D("aws_key_id_b1", r"IA(?<=AKIA)(?<![A-Za-z0-9]AKIA)[A-Z0-9]{16}(?![A-Za-z0-9])", "K"),
                # a Twilio API key SID (and the secret when it follows)
                _D(
                    "twilio_key_sid",
                    r"[0-9a-fA-F](?<=SK.)(?<![A-Za-z0-9]SK.)[0-9a-fA-F]{31}(?![A-Za-z0-9])",
                    "K",
                ),
                _D(
                    "webhook",
                    r"\.com/services/(?<=hooks\.slack\.com/services/)T[A-Za-z0-9]{6,12}/B[A-Za-z0-9]{6,12}/"
                    r"[A-Za-z0-9]{16,48}(?![A-Za-z0-9])",
                    "k",
                ),
                _D("kv", r"[Ee][Nn](?<=(?i:token))" + _KEY_GUARD),
                _D("kv", _KEY_WORD + _KEY_GUARD),
                _D("cookie", r"[Ii][Ee](?<=(?i:cookie))(?![A-Za-z0-9])(?=(?:\\?[\"'])?[ \t]*:)"),
            ),
        ),
    ),
    (
        "wW",
        _G(
            "",
            (
                _D("kv", r"[Oo][Rr][Dd](?<=(?i:password))" + _KEY_GUARD),
                _D("kv", r"[Dd](?:(?<=(?i:passwd))|(?<=(?i:pwd)))" + _KEY_GUARD),
                _D("kv", r"[Tt](?<=(?i:jwt))" + _KEY_GUARD),
            ),
        ),
    ),
    (
        "cC",
        _G(
            "",
            (
                _D("kv", r"[Rr][Ee][Tt](?<=(?i:secret))" + _KEY_GUARD),
                _D("kv", r"[Rr][Ee][Dd](?i:entials?)" + _KEY_GUARD),
                # a Twilio account SID is no secret, but the auth token that follows it is
                _D(
                    "twilio_account_sid",
                    r"[0-9a-f](?<=AC.)(?<![A-Za-z0-9]AC.)[0-9a-f]{31}(?![A-Za-z0-9])",
                    "C",
                ),
                _D("addr_word", r"alle(?<![\w]Calle)" + _ROMANCE_TAIL, "C"),
                _D("addr_word", r"arrer(?<![\w]Carrer)" + _ROMANCE_TAIL, "C"),
                _D("addr_word", r"orso(?<![\w]Corso)" + _ROMANCE_TAIL, "C"),
            ),
        ),
    ),
    (
        "zZ",
        _G(
            "",
            (
                _D("kv", r"[Aa][Tt][Ii][Oo][Nn](?<=(?i:authorization))" + _KEY_GUARD),
                _D(
                    "apikey_b2",
                    r"a(?<=AIza)(?<![\w\-]AIza)[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])",
                    "z",
                ),
                _D("addr_word_b3", r"za(?<=Piazza)(?<![\w]Piazza)(?:le)?" + _ROMANCE_TAIL, "z"),
                _D("addr_word_b3", r"a(?<=Plaza)(?<![\w]Plaza)" + _ROMANCE_TAIL, "z"),
            ),
        ),
    ),
    (
        "J",
        _G(
            "",
            (
                _D(
                    "jwt",
                    r"[A-Za-z0-9_\-](?<=eyJ.)(?<![\w\-]eyJ.)[A-Za-z0-9_\-]{7,8191}"
                    r"\.[A-Za-z0-9_\-]{8,16384}\.[A-Za-z0-9_\-]{0,4096}",
                ),
            ),
        ),
    ),
    (
        "x",
        _G(
            "",
            (
                _D("token", r"o(?<![\w]xo)x[abposr]-[A-Za-z0-9\-]{10,250}"),
                _D("token", r"a(?<![\w]xa)pp-[A-Za-z0-9\-]{10,250}"),
            ),
        ),
    ),
    (
        "bB",
        _G(
            "",
            (
                _D(
                    "bearer",
                    r"[Ee][Aa][Rr][Ee][Rr](?<![A-Za-z0-9](?i:bearer))[ \t]+"
                    r"[A-Za-z0-9._~+/\-]{8,4096}=*",
                ),
                _D("po_box", r"ox[ \t]+\d{1,7}(?!\d)", "B"),
            ),
        ),
    ),
    ("V", _G("", (_D("addr_word", r"ia(?<![\w]Via)(?:le)?" + _ROMANCE_TAIL),))),
    (
        "v",
        _G(
            "",
            (
                _D("addr_word_b1", r"enida(?<=Avenida)(?<![\w]Avenida)" + _ROMANCE_TAIL),
                _D("addr_word_b1", r"da\.(?<=Avda\.)(?<![\w]Avda\.)" + _ROMANCE_TAIL),
            ),
        ),
    ),
    (
        "G",
        _G(
            "",
            (
                _D(
                    "apikey_b1",
                    r"\.(?<=SG\.)(?<![\w]SG\.)[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}",
                ),
            ),
        ),
    ),
    # AWS temporary key ids (the long-lived "AKIA" ones are found at their "K")
    ("I", _G("", (_D("aws_key_id_b2", r"A(?<=ASIA)(?<![A-Za-z0-9]ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),))),
    # signatures and keys in a URL's query string (Azure SAS "sig=", Google Maps "key=", S3 presigned)
    (
        "?&",
        _G(
            "",
            (
                _D(
                    "query_secret",
                    r"(?i:sig|signature|key|apikey|api_key|api-key|x-amz-signature|x-goog-signature)"
                    r"=[^\s&#\"'<>]{8,4096}",
                ),
            ),
        ),
    ),
)

# Most frequent anchors first: each search hit tries the branches in this order.
_ANCHOR_ORDER: Final = "0123456789c-bw:kvx_(+CBWKzZJVG@%I?&"


def _render(node: _D | _G, ch: str, exclude: frozenset[str], counter: list[int]) -> str:
    if isinstance(node, _D):
        counter[0] += 1
        if node.kind in exclude or (node.only and ch not in node.only):
            return ""
        return f"(?:{node.pattern})(?P<k{counter[0]}_{node.kind}>)"
    parts = [r for item in node.items if (r := _render(item, ch, exclude, counter))]
    return f"{node.guard}(?:{'|'.join(parts)})" if parts else ""


@lru_cache(maxsize=128)
def _master(exclude: frozenset[str] = frozenset(), only: str | None = None) -> re.Pattern[str]:
    """The master regex: one branch per anchor character, each starting with that character
    as a literal, so the engine computes a first-character set (a fast C scan) and dispatches
    a hit with one comparison per branch. ``exclude`` leaves detectors out (after a validator
    said no); ``only`` keeps the branch of one anchor character."""
    per_char: dict[str, list[str]] = {}
    counter = [0]
    for chars, group in _SPEC:
        for ch in chars:
            rendered = _render(group, ch, exclude, counter)
            if rendered:
                per_char.setdefault(ch, []).append(rendered)
    branches = [
        f"{re.escape(ch)}(?:{'|'.join(per_char[ch])})"
        for ch in _ANCHOR_ORDER
        if ch in per_char and (only is None or ch == only)
    ]
    return re.compile("|".join(branches) if branches else r"(?!)")


_KIND_OF_GROUP: dict[str, str] = {}


def _kind(m: re.Match[str]) -> str:
    name = m.lastgroup or ""
    kind = _KIND_OF_GROUP.get(name)
    if kind is None:
        kind = _KIND_OF_GROUP[name] = name[name.index("_") + 1 :]
    return kind


# --------------------------------------------------------------------------------------------
# Validators: (match, text) -> (start, end, placeholder) or None to reject
# --------------------------------------------------------------------------------------------

_NON_DIGIT = re.compile(r"\D")
_NOTHING: Final = (-1, -1, "")  # a validator's "no, and nothing else starts here either"


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a string of digits."""
    if not (digits.isascii() and digits.isdigit()):
        return False
    # every other digit from the right, the others doubled (digit sum); ASCII codes summed in C
    both = digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLE)
    return (sum(both.encode()) - 48 * len(both)) % 10 == 0


_LUHN_DOUBLE: Final = str.maketrans("0123456789", "0246813579")  # 2d, minus 9 when > 9


def _fixed(placeholder: str, back: int = 0) -> _Handler:
    def handle(m: re.Match[str], text: str) -> tuple[int, int, str]:
        return m.start() - back, m.end(), placeholder

    return handle


# Issuer prefixes: Visa 4; Mastercard 51-55, 2221-2720; Amex 34, 37; Diners 30, 36, 38, 39;
# JCB 35; Discover 6011, 64, 65; UnionPay 62. (A year list like "2019 2020 2021 2022" is not.)
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[045678-9]|6(?:011|[245])")


def _h_card(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    s = m.group()
    if s[0] != "4" and not _CARD_PREFIX.match(s):
        return None
    if luhn_ok(s.replace(" ", "").replace("-", "")):
        return m.start(), m.end(), "[CARD]"
    if len(s) > 19 and s.count(" ") + s.count("-") == 4:
        # a fifth short group may be a CVV or a number that merely follows: try without it
        end = max(s.rfind(" "), s.rfind("-"))
        if luhn_ok(s[:end].replace(" ", "").replace("-", "")):
            return m.start(), m.start() + end, "[CARD]"
    # Only a phone number or an SSN after a keyword could start where a card-shaped number does:
    # without a keyword, say so and spare the other detectors (a long run of 4-digit groups
    # would otherwise cost a second match per group).
    return None if _number_keyword(text, m.start()) else _NOTHING


def _h_ssn(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    area, group, serial = m.group().split("-")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return m.start(), m.end(), "[SSN]"


_VERSION_BEFORE = re.compile(r"(?i)(?<![a-z])(?:version|ver\.?|v|release|build)[ \t:=]*\Z")


def _h_ipv4(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    ip = m.group()
    if any(int(octet) > 255 for octet in ip.split(".")):
        return None
    if ip.startswith(("127.", "255.", "0.")):  # loopback, netmasks, "this network"
        return None
    if _VERSION_BEFORE.search(text, max(0, m.start() - 10), m.start()):
        return None
    return m.start(), m.end(), "[IP]"


_HEX_COLON_TAIL = re.compile(r"[0-9A-Fa-f:]{1,40}\Z")
_IPV6_CANDIDATE = re.compile(
    r"[0-9A-Fa-f:]{2,45}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[A-Za-z0-9_.]{1,16})?(?![\w:]|\.\d)"
)


def _h_ipv6(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    colon = m.start()
    tail = _HEX_COLON_TAIL.search(text, max(0, colon - 40), colon)
    start = tail.start() if tail else colon
    if start and (text[start - 1].isalnum() or text[start - 1] in "_.:"):
        return None  # std::vector, Foo::Bar, 1.2::3
    cand = _IPV6_CANDIDATE.match(text, start)
    if cand is None:
        return None
    address = cand.group().split("%", 1)[0]
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified or sum(ch != ":" for ch in address) < 5:
        return None  # ::1, ::, and short things like a[1::2]
    return start, cand.end(), "[IP]"


_DATE_LIKE = re.compile(
    r"(?:\d{4}[./\-](?:0?[1-9]|1[0-2])(?:[./\-](?:0?[1-9]|[12]\d|3[01]))?"  # 2024-01-02, 2024-01
    r"|(?:0?[1-9]|[12]\d|3[01])[./\-](?:0?[1-9]|[12]\d|3[01])[./\-](?:\d{4}|\d{2}))(?!\d)"  # 02/01/24
)
_EXT_TAIL = re.compile(r"[ \t]*,?[ \t]*(?:ext\.?|extension|x|#)[ \t]*\d{1,6}\Z", re.IGNORECASE)


def _digits_without_ext(s: str) -> tuple[int, str]:
    ext = _EXT_TAIL.search(s)
    body = s[: ext.start()] if ext else s
    return len(_NON_DIGIT.sub("", body)), body


def _h_phone_intl(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    n, body = _digits_without_ext(m.group())
    end = m.end()
    # more than 15 digits: something else follows the number (a date, a count); drop chunks
    while n > 15:
        cut = max(body.rfind(" "), body.rfind("-"), body.rfind("."))
        if cut <= 2:
            return None
        body = body[:cut]
        end = m.start() + cut
        n = len(_NON_DIGIT.sub("", body))
    if n < 7:  # with the "+"; "+1 5" or "+20.00" are not phone numbers
        return None
    return m.start(), end, "[PHONE]"


def _h_phone_us(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    body = _digits_without_ext(m.group())[1]
    if "." in body and "-" in body:  # "252.227-7013" is a clause number, not a phone
        return None
    return m.start(), m.end(), "[PHONE]"


def _h_phone_nat(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    n, body = _digits_without_ext(m.group())
    if not (10 <= n <= (15 if body.startswith("00") else 12)) or _DATE_LIKE.match(body):
        return None
    return m.start(), m.end(), "[PHONE]"


_NUMBER_CONTEXT = re.compile(
    r"(?<![a-z])(?P<kw>phone|telephone|tel|mobile|cell|cellphone|fax|whatsapp|sms|call|text"
    r"|reach|contact|dial|ssn|social[ \t]security)"
    r"(?:[ \t]*(?:no\.?|number|num|nr\.?|\#|me))?(?:[ \t]+(?:at|on))?[ \t]*[:=\#\-]?[ \t]*\(?\Z"
)


def _number_keyword(text: str, start: int) -> str | None:
    """The keyword ("phone", "SSN", ...) right before a number at ``start``, lowercased."""
    i = start - 1
    while i >= 0 and text[i] in " \t(":
        i -= 1
    if i < 0 or not (text[i].isalpha() or text[i] in ":=#-."):
        return None  # "4111 4111": a number right before, no keyword
    found = _NUMBER_CONTEXT.search(text[max(0, start - 40) : start].lower())
    return found.group("kw") if found else None


def _h_bare_number(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    kw = _number_keyword(text, m.start())
    if kw is None:
        return None
    n, body = _digits_without_ext(m.group())
    if not 7 <= n <= 15 or _DATE_LIKE.fullmatch(body):
        return None
    return m.start(), m.end(), "[SSN]" if kw.startswith(("ssn", "social")) else "[PHONE]"


_LOCAL_PART_TAIL = re.compile(r"[^\W_][\w.%+\-']{0,63}\Z")


def _h_email(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    at = m.start()
    local = _LOCAL_PART_TAIL.search(text, max(0, at - 64), at)
    if local is None:
        return None
    domain = m.group()[1:]
    if local.group() == "git" or re.match(r"\d+x\.", domain):  # git@github.com:..., icon@2x.png
        return None
    return local.start(), m.end(), "[EMAIL]"


# The length of each country's IBAN (SWIFT's IBAN registry): with mod-97 it rules out all but a
# handful of the letter-letter-digit-digit words that lowercase text is full of.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FK", "FO", "GL", "NL", "SD"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "OM", "SO", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["LY", "PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HN", "HU", "LB", "NI", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU", "YE"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
    **dict.fromkeys(["RU"], 33),
}


def _iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _h_iban(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    start = m.start() - 2
    candidate = text[start : m.end()]
    # the last groups may be a word that follows ("... 7034 HF_TOKEN"): drop them one by one
    while len(candidate) >= 15:
        if _iban_ok(candidate.replace(" ", "")):
            return start, start + len(candidate), "[IBAN]"
        cut = candidate.rfind(" ")
        if cut < 0:
            break
        candidate = candidate[:cut]
    return None


_HEADLINE = re.compile(r"\d{1,2}[ \t]+(?:[A-Z][a-z]+[ \t]+){1,2}Way[ \t]+(?:to|of)\b")


def _h_addr(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    # "3 Simple Way to ..." is a headline; "1 Hacker Way to the airport" loses to it, but an
    # address with a one- or two-digit number, on a "Way", followed by "to"/"of" is rare
    if _HEADLINE.match(text, m.start()):
        return None
    return m.start(), m.end(), "[ADDRESS]"


def _h_addr_de(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    street = _DE_STREET_BEFORE.search(text, max(0, m.start() - 48), m.start())
    if street is None:
        return None
    return street.start(), m.end(), "[ADDRESS]"


_PO_BOX_BEFORE = re.compile(r"(?<![\w.])(?:P\.?[ \t]?O\.?|Post[ \t]Office)[ \t]*\Z", re.IGNORECASE)


def _h_po_box(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    prefix = _PO_BOX_BEFORE.search(text, max(0, m.start() - 16), m.start())
    if prefix is None:
        return None
    return prefix.start(), m.end(), "[ADDRESS]"


def _h_url_creds(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    if m.group().endswith("@"):
        return m.start() + 3, m.end(), "[SECRET]@"
    password = m.group().rpartition(":")[2]
    if password.isdigit() or "." in password or "?" in password or "#" in password:
        return None  # scheme://host:8080, scheme://host:port.path
    return m.start() + 3, m.end(), "[SECRET]"


# What may stand between a key id and the secret that follows it: shells, CSV exports and SDK
# dumps write "AKIA... wJalr...", "AKIA...,wJalr...", '"AccessKeyId": "ASIA...", "Key": "wJalr..."'.
_AFTER_ID = (
    r"(?:\\?[\"'])?[ \t]*[,;:|=/ \t\r\n][ \t\r\n]*"
    r"(?:\\?[\"'][A-Za-z_]{1,40}\\?[\"'][ \t]*[:=][ \t]*)?(?:\\?[\"'])?"
)
_AWS_SECRET_AFTER = re.compile(_AFTER_ID + r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
# ... or a few words later ("aws_access_key_id=AKIA... and the secret wJalr..."): then it must look
# random (upper and lower case letters and a digit or "/" or "+"), unlike a path or a hex digest
_AWS_SECRET_NEAR = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_NEAR_WINDOW = 160
_TWILIO_SECRET_AFTER = re.compile(_AFTER_ID + r"([A-Za-z0-9]{32})(?![A-Za-z0-9])")
_TWILIO_TOKEN_AFTER = re.compile(_AFTER_ID + r"([0-9a-f]{32})(?![A-Za-z0-9])")


def _random_looking(s: str) -> bool:
    return not (s.isupper() or s.islower() or s.isalpha())


def _paired(
    back: int, secret_after: re.Pattern[str], *, id_alone: bool, near: re.Pattern[str] | None = None
) -> _Handler:
    """A key id found ``back`` characters after its start, and the secret that may follow it (right
    after, or with ``near``, within a few words): both masked, what stands between masked on its
    own. ``id_alone``: mask the id even with no secret after it."""

    def handle(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
        start, end = m.start() - back, m.end()
        after = secret_after.match(text, end)
        if after is not None:
            secret_start, secret_end = after.span(1)
        elif (
            near is not None
            and (found := near.search(text, end, end + _NEAR_WINDOW))
            and _random_looking(found.group())
        ):
            secret_start, secret_end = found.span()
        else:
            return (start, end, "[API_KEY]") if id_alone else None
        return start, secret_end, "[API_KEY]" + mask(text[end:secret_start]) + "[SECRET]"

    return handle


def _h_webhook(m: re.Match[str], text: str) -> tuple[int, int, str]:
    # ".../services/T<team>/B<channel>/<secret>": the ids stay, the last segment is the secret
    return text.rindex("/", m.start(), m.end()) + 1, m.end(), "[TOKEN]"


def _h_query_secret(m: re.Match[str], text: str) -> tuple[int, int, str]:
    return text.index("=", m.start(), m.end()) + 1, m.end(), "[SECRET]"


def _h_bearer(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    token = m.group().split()[-1]
    if len(token) < 16 and not any(ch.isdigit() for ch in token):
        return None  # "bearer credential", "Bearer YOUR_TOKEN"
    return m.end() - len(token), m.end(), "[TOKEN]"


_COOKIE_TAIL = re.compile(
    r"(?:\\?[\"'])?[ \t]*:[ \t]*"
    r"(?:\"(?P<q1>[^\"\r\n]{1,4096})\"|'(?P<q2>[^'\r\n]{1,4096})'|(?P<u>(?:(?!-----BEGIN)[^\r\n]){1,4096}))"
)


_COOKIE_PAIR = re.compile(r"[^\s=;,()\[\]\"']{1,128}=")


def _h_cookie(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    tail = _COOKIE_TAIL.match(text, m.end())
    if tail is None:
        return None
    name = next(n for n in ("q1", "q2", "u") if tail.start(n) >= 0)
    if not _COOKIE_PAIR.match(tail.group(name)):  # "sid=abc; theme=dark", not 'http.cookies'
        return None
    return tail.start(name), tail.end(name), "[SECRET]"


_KV_TAIL = re.compile(
    r"(?:\\?[\"'])?"
    # separators: "key: Type = value" (annotated), "key = value", "key: value", "key => value"
    r"(?P<sep>[ \t]*:[ \t]*[A-Za-z_][\w.]{0,40}(?:\[[^\]\r\n]{0,40}\])?(?:[ \t]*\|[ \t]*None)?"
    r"[ \t]*=(?!=)[ \t]*"
    r"|[ \t]*(?:=>|:=|=(?!=)|:)[ \t]*)"
    r"(?:(?P<scheme>(?i:Bearer|Basic|Token|Bot|Digest|Negotiate|ApiKey|SSWS))[ \t]+)?+"
    r"(?:\"(?P<q1>(?:[^\"\\\r\n]|\\.){1,1024})\""
    r"|\\\"(?P<q2>[^\"\\\r\n]{1,1024})\\\""
    r"|'(?P<q3>[^'\r\n]{1,1024})'"
    r"|(?P<u>[^\s\"'`,;&<>(){}\[\]\\]{1,1024})"
    # an opening quote whose closing quote was cut off (a truncated log line)
    r"|\\?[\"'](?:(?i:Bearer|Basic|Token|Bot|Digest)[ \t]+)?(?P<q4>[^\s\"'\\]{1,1024})(?![\"'\\]))"
)
_KV_STOPWORDS = frozenset(
    """none null nil true false undefined str string int bytes bool optional secretstr any required dict list
    env self cls value val data config settings key token secret password passwd pwd auth credentials cookie
    redacted hidden masked omitted changeme example placeholder your_key_here xxx object float tuple type
    callable sequence mapping iterable union literal""".split()  # noqa: SIM905
)
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*|[A-Z]+[0-9]*[A-Z][a-z][A-Za-z0-9]*")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")  # a.b.c, pkg.mod:func
_ANNOTATION_NEXT = re.compile(r"[ \t]*(?:[,)\]|=]|->)")
_KEY_NAME_TAIL = re.compile(r"[A-Za-z0-9_\-]{1,48}\Z")
_QUOTED_NON_SECRETS = frozenset({"none", "null", "nil", "true", "false", "undefined"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*")
_SCHEME_PREFIX = re.compile(r"(?i:Bearer|Basic|Token|Bot|Digest)[ \t]+(?=\S)")
_PROSE_NEXT = re.compile(r"[ \t]+[A-Za-z]")


def _kv_placeholder(key: str) -> str:
    k = key.lower()
    if any(w in k for w in ("pass", "pwd", "secret", "credential", "private")):
        return "[SECRET]"
    if any(w in k for w in ("token", "auth", "jwt")):
        return "[TOKEN]"
    return "[API_KEY]"


def _h_kv(m: re.Match[str], text: str) -> tuple[int, int, str] | None:
    tail = _KV_TAIL.match(text, m.end())
    if tail is None:
        return None
    placeholder = _kv_placeholder(text[max(0, m.start() - 16) : m.end()])
    for name in ("q1", "q2", "q3", "q4"):
        if tail.start(name) >= 0:
            vs, ve = tail.span(name)
            value = text[vs:ve]
            scheme = _SCHEME_PREFIX.match(value)
            if scheme:
                vs += scheme.end()
                value = text[vs:ve]
            if not value.strip() or value.startswith(("${", "{{", "<", "%(")):
                return None  # "${API_KEY}", "Basic <username>:<password>"
            key = _KEY_NAME_TAIL.search(text, max(0, m.end() - 48), m.end())
            plain_value = _NON_ALNUM.sub("", value.lower())
            if value.lower() in _QUOTED_NON_SECRETS or (
                key and plain_value and _NON_ALNUM.sub("", key.group().lower()).endswith(plain_value)
            ):
                return None  # "token": "null", apiKey = "apiKey", _AUTHORIZATION = "authorization"
            return vs, ve, placeholder
    vs, ve = tail.span("u")
    value = text[vs:ve]
    nxt = text[ve : ve + 1]
    if nxt in ("(", "[", '"', "'") or len(value) < 3:
        return None  # get_token(), os.environ["KEY"], f"Bearer {token}", x
    if value[0] in "$%:?{<@*#&=" or value.lower() in _KV_STOPWORDS:
        return None
    if (value.isdigit() and len(value) < 6) or all(ch in "*xX.•" for ch in value):
        return None
    sep = tail.group("sep")
    if tail.start("scheme") < 0 and _IDENT.fullmatch(value):
        # an identifier rather than a secret: a variable, an attribute, a type, a word of prose
        if "_" in value or not value.isascii() or ("." in value and sep != sep.strip()):
            return None  # api_key=api_key, token: self.value
        if "=" in sep and sep != sep.strip():
            return None  # token = nextchar, self.password = password (code)
        if ":" in sep and value[0].isupper() and sum(ch.isupper() for ch in value) > 1:
            return None  # private_key: SSHPrivateKeyTypes (an annotation)
        if ":" in sep and _PROSE_NEXT.match(text, ve):
            return None  # "Token: the unit of text", "token: object if ..."
    if sep != sep.strip() and _DOTTED_NAME.fullmatch(value):
        return None  # private_key: ed25519.Ed25519PrivateKey, token = self.tokens.v2
    if ":" in sep and _TYPE_NAME.fullmatch(value) and _ANNOTATION_NEXT.match(text, ve):
        return None  # def f(private_key: PKCS7PrivateKeyTypes, ...), key: Ed25519PrivateKey | None
    return vs, ve, placeholder


_HANDLERS: Final[dict[str, _Handler]] = {
    "card": _h_card,
    "ssn": _h_ssn,
    "ipv4": _h_ipv4,
    "phone_us": _h_phone_us,
    "phone_nat": _h_phone_nat,
    "addr": _h_addr,
    "addr_de": _h_addr_de,
    "bare_number": _h_bare_number,
    "iban": _h_iban,
    "phone_intl": _h_phone_intl,
    "phone_paren": _fixed("[PHONE]"),
    "url_creds": _h_url_creds,
    "ipv6": _h_ipv6,
    "email": _h_email,
    "private_key": _fixed("[SECRET]"),
    "apikey_b1": _fixed("[API_KEY]", 1),
    "apikey_b2": _fixed("[API_KEY]", 2),
    "apikey_b3": _fixed("[API_KEY]", 3),
    "apikey_b4": _fixed("[API_KEY]", 4),
    "apikey_b5": _fixed("[API_KEY]", 5),
    "apikey_b6": _fixed("[API_KEY]", 6),
    "aws_key_id_b1": _paired(1, _AWS_SECRET_AFTER, id_alone=True, near=_AWS_SECRET_NEAR),
    "aws_key_id_b2": _paired(2, _AWS_SECRET_AFTER, id_alone=True, near=_AWS_SECRET_NEAR),
    "twilio_key_sid": _paired(1, _TWILIO_SECRET_AFTER, id_alone=True),
    "twilio_account_sid": _paired(1, _TWILIO_TOKEN_AFTER, id_alone=False),
    "webhook": _h_webhook,
    "query_secret": _h_query_secret,
    "kv": _h_kv,
    "cookie": _h_cookie,
    "addr_word": _fixed("[ADDRESS]"),
    "addr_word_b1": _fixed("[ADDRESS]", 1),
    "addr_word_b3": _fixed("[ADDRESS]", 3),
    "jwt": _fixed("[TOKEN]", 2),
    "token": _fixed("[TOKEN]"),
    "bearer": _h_bearer,
    "po_box": _h_po_box,
}

# Obfuscated emails ("john at example dot com", "jane[at]example[dot]org") are rare and have
# no good anchor: a separate pass, run only when the text contains "dot".
_OBF_AT = r"(?:[ \t]*[\[({<][ \t]*(?:at|AT)[ \t]*[\])}>][ \t]*|[ \t]+(?:at|AT)[ \t]+)"
_OBF_DOT = r"(?:[ \t]*[\[({<][ \t]*(?:dot|DOT)[ \t]*[\])}>][ \t]*|[ \t]+(?:dot|DOT)[ \t]+)"
_OBFUSCATED_EMAIL = re.compile(
    r"(?<![\w.+\-])[A-Za-z0-9][\w.+\-]{0,63}" + _OBF_AT + r"[A-Za-z0-9\-]{1,63}"
    rf"(?:{_OBF_DOT}[A-Za-z0-9\-]{{1,63}}){{0,3}}"
    + _OBF_DOT
    + r"(?:com|org|net|edu|gov|io|co|uk|de|fr|nl|es|it|info|biz|dev|ai|us|ca|au|me"
    r"|COM|ORG|NET|EDU|GOV|IO)(?![A-Za-z0-9])"
)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def mask(text: str) -> str:
    """Replace every email, phone, address, card, SSN, IBAN, IP, API key and token in ``text``."""
    if not text:
        return text
    if "dot" in text or "DOT" in text:
        text = _OBFUSCATED_EMAIL.sub("[EMAIL]", text)
    search = _master().search
    out: list[str] = []
    last = 0  # end of the text already copied to out
    pos = 0
    while True:
        m = search(text, pos)
        if m is None:
            break
        anchor = m.start()
        kind = _kind(m)
        hit = _HANDLERS[kind](m, text)
        if hit is None:
            # the validator said no: give the other detectors their turn at this anchor
            excluded = frozenset((kind,))
            while hit is None:
                m2 = _master(excluded, text[anchor]).match(text, anchor)
                if m2 is None:
                    break
                kind = _kind(m2)
                hit = _HANDLERS[kind](m2, text)
                excluded = excluded | {kind}
        if hit is None or hit is _NOTHING:
            pos = anchor + 1
            continue
        start, end, placeholder = hit
        if end <= last or (start < last and kind == "email"):
            # inside what an earlier finding already covered (the "@host" after a masked
            # token is not an email address of its own)
            pos = anchor + 1
            continue
        out.append(text[last : max(start, last)])
        out.append(placeholder)
        last = end
        pos = max(end, anchor + 1)
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _truncation_marker(dropped: int) -> str:
    return f"…[truncated {dropped} chars]"


def _safe_cut(text: str, limit: int) -> int:
    """``limit``, moved back so that a placeholder such as ``[EMAIL]`` is never cut in half."""
    if limit <= 0 or limit >= len(text):
        return max(0, min(limit, len(text)))
    open_ = text.rfind("[", max(0, limit - 11), limit)
    if open_ >= 0:
        close = text.find("]", open_, open_ + 12)
        if close >= limit and text[open_ : close + 1] in PLACEHOLDERS:
            return open_
    return limit


def truncate(text: str, limit: int) -> str:
    """Keep the first ``limit`` characters and append ``…[truncated N chars]``.

    ``N`` is the number of characters dropped; the marker is not counted in ``limit``.
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    if len(text) <= limit:
        return text
    cut = _safe_cut(text, limit)
    return text[:cut] + _truncation_marker(len(text) - cut)


_MASK_MARGIN = 512  # a finding that crosses the cut is seen whole if it is shorter than this
_MASK_EXTEND = 8192  # ... or ends at the next whitespace within this many more characters
_WS = re.compile(r"\s")


def mask_and_truncate(text: str, limit: int | None) -> str:
    """``mask`` then ``truncate``; for long text only the part that can survive is masked.

    ``limit=None`` means no truncation. ``N`` in the marker counts the characters dropped from
    the masked head plus those never looked at.
    """
    if limit is None or len(text) <= limit:
        return mask(text)
    if limit < 0:
        raise ValueError("limit must be >= 0")
    window = limit + _MASK_MARGIN
    if window >= len(text):
        window = len(text)
    else:
        ws = _WS.search(text, window, window + _MASK_EXTEND)
        window = ws.start() if ws else min(len(text), window + _MASK_EXTEND)
    head = mask(text[:window])
    unseen = len(text) - window
    if len(head) <= limit:
        return head + _truncation_marker(unseen) if unseen else head
    cut = _safe_cut(head, limit)
    return head[:cut] + _truncation_marker(len(head) - cut + unseen)


_SECRET_KEY = re.compile(
    r".*(?:authorization|auth|(?:api|access|secret|private|signing|encryption|master|client)_?key"
    r"|apikey|secret|token|passw(?:or)?d|pwd|passphrase|cookie|credentials?|session_?id|sessid"
    r"|jwt|signature)"
)
_PII_KEYS: Final = {
    "email": "[EMAIL]",
    "email_address": "[EMAIL]",
    "phone": "[PHONE]",
    "phone_number": "[PHONE]",
    "mobile": "[PHONE]",
    "telephone": "[PHONE]",
    "ssn": "[SSN]",
    "social_security_number": "[SSN]",
    "card_number": "[CARD]",
    "credit_card": "[CARD]",
    "cc_number": "[CARD]",
    "iban": "[IBAN]",
    "street_address": "[ADDRESS]",
    "address_line1": "[ADDRESS]",
    "address_line2": "[ADDRESS]",
    "ip_address": "[IP]",
    "client_ip": "[IP]",
    "remote_addr": "[IP]",
}


@lru_cache(maxsize=4096)
def _normalise_key(key: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return re.sub(r"[\s.\-]+", "_", snake).lower().strip("_")


def is_secret_key(key: str) -> bool:
    """True for dict keys / header names whose value is a credential (value masked whole)."""
    return _SECRET_KEY.fullmatch(_normalise_key(key)) is not None


_MAX_DEPTH = 64


def mask_value(obj: Any, limit: int | None = None, _depth: int = 0) -> Any:
    """Deep copy of ``obj`` with every string masked (and truncated to ``limit``).

    Dicts, lists, tuples and sets are walked (sets come back as lists); dict keys that name
    secrets get ``[REDACTED]`` whatever their value; keys that name a PII field (``email``,
    ``phone``, ``ssn``, ``card_number``...) get that field's placeholder. Pydantic models and
    dataclasses are dumped first. Numbers long enough to be a card number are checked too.
    """
    if isinstance(obj, str):
        return mask_and_truncate(obj, limit)
    if obj is None or isinstance(obj, (bool, float)):
        return obj
    if isinstance(obj, int):
        if abs(obj) >= 10**12:
            s = str(obj)
            masked = mask(s)
            return obj if masked == s else masked
        return obj
    if _depth >= _MAX_DEPTH:
        return "[…]"
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            if isinstance(k, str):
                if v is not None and is_secret_key(k):
                    out[k] = REDACTED
                    continue
                placeholder = _PII_KEYS.get(_normalise_key(k))
                if placeholder and isinstance(v, (str, int)) and not isinstance(v, bool) and v != "":
                    out[k] = placeholder
                    continue
                k = mask(k)
            out[k] = mask_value(v, limit, _depth + 1)
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [mask_value(v, limit, _depth + 1) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, (bytes, bytearray)):
        return mask_and_truncate(bytes(obj).decode("utf-8", "replace"), limit)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return mask_value(dump(mode="json"), limit, _depth + 1)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return mask_value(dataclasses.asdict(obj), limit, _depth + 1)
    return obj

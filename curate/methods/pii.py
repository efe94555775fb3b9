"""PII and secrets detectors (docs/methods.md §16.4): each finds candidates with a regular expression and keeps only
those that pass its validation (checksums, address rules, context).

`find_spans(text, types)` returns the validated spans of one text, overlaps resolved by priority (private key >
secret > jwt > credit card > IBAN > email > IP > phone), then the longer span. Spans that look like PII but are
safe (reserved example domains, private or documentation addresses) come back with an `allow_reason` and are left
in place. `redact(text, spans, style)` replaces the others and gives each span its offsets in the output.

Column-wide work is in `curate.methods.pii_columns`: one RE2 pass over a whole Arrow column picks the few rows that
can hold anything, and only those go through these Python detectors.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

Style = Literal["typed", "dolma", "fake"]
TYPES = ("private_key", "secret", "jwt", "credit_card", "iban", "email", "ip", "phone", "high_entropy")
DEFAULT_TYPES = tuple(t for t in TYPES if t != "high_entropy")  # hashes and UUIDs look random too (§16.4)
PRIORITY = {t: i for i, t in enumerate(TYPES)}
PLACEHOLDER = {"private_key": "PRIVATE_KEY", "secret": "SECRET", "jwt": "SECRET", "credit_card": "CREDIT_CARD",
               "iban": "IBAN", "email": "EMAIL", "ip": "IP_ADDRESS", "phone": "PHONE", "high_entropy": "SECRET"}
DOLMA = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "ip": "IP_ADDRESS"}
FAKE = {"email": "user@example.com", "ip": "192.0.2.1", "phone": "+1 555-0100", "credit_card": "4000 0000 0000 0002",
        "iban": "XX00 0000 0000 0000"}  # reserved or never-issued values, unlike DataTrove's real public IPs


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str  # one of TYPES
    subtype: str = ""  # aws_access_key_id, ipv6, jwt, ...
    allow_reason: str | None = None  # safe-looking: left in place and recorded as allowed
    out_start: int = -1
    out_end: int = -1

    @property
    def action(self) -> str:
        return "allowed" if self.allow_reason else "redacted"


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# ---------------------------------------------------------------- email

EMAIL = _compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
                 r"[A-Za-z]{2,}(?![\w-])")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
RESERVED_SUFFIXES = (".example", ".test", ".invalid", ".localhost")


def _emails(text: str) -> Iterable[Span]:
    for m in EMAIL.finditer(text):
        domain = m.group().rsplit("@", 1)[1].lower()
        reserved = domain in RESERVED_DOMAINS or domain.endswith(tuple("." + d for d in RESERVED_DOMAINS)) or \
            domain.endswith(RESERVED_SUFFIXES)
        yield Span(m.start(), m.end(), "email", "", "reserved_domain" if reserved else None)


# ---------------------------------------------------------------- IP addresses

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = _compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
IPV6 = _compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# `version 1.2.3.4`, `firmware: 2.0.1.9`: the word right before the number (only separators between), so that
# `to build a 1.159.119.129 house` or `u + v : u in 66.139.247.115` still count as addresses
VERSION_CONTEXT = _compile(r"(?i)\b(?:version|ver|v|release|build|firmware|ec)\.?\s*[:=#-]?\s*$")  # EC: enzymes


def _address_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address.is_global:
        return None
    return "documentation_address" if any(address in n for n in _DOCUMENTATION) else "private_address"


_DOCUMENTATION = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                     "2001:db8::/32")]


def _ips(text: str, public_only: bool = True) -> Iterable[Span]:
    for m in IPV4.finditer(text):
        if VERSION_CONTEXT.search(text[max(0, m.start() - 20):m.start()]):
            continue  # `version 1.2.3.4` is a version, not an address
        reason = _address_reason(ipaddress.IPv4Address(m.group())) if public_only else None
        yield Span(m.start(), m.end(), "ip", "ipv4", reason)
    for m in IPV6.finditer(text):
        if sum(1 for g in m.group().split(":") if g) < 3:
            continue  # `a::b` is code (and a valid address to Python 3.11)
        try:
            address = ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        yield Span(m.start(), m.end(), "ip", "ipv6", _address_reason(address) if public_only else None)


# ---------------------------------------------------------------- phone numbers

PHONE = _compile(r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w-]|\.\d)")
PHONE_CONTEXT = _compile(r"(?i)isbn|doi|#|order|invoice")
ARITHMETIC, ARITHMETIC_BEFORE = _compile(r"\s*[=<>*/+×÷]"), _compile(r"[=<>*/×÷]\s*$")
DATE_TIME = _compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}$|\d{1,2}:\d{2}")


def _phones(text: str) -> Iterable[Span]:
    for m in PHONE.finditer(text):
        found = m.group()
        digits = sum(c.isdigit() for c in found)
        if not 10 <= digits <= 15 or (not found.startswith(("+", "(")) and not re.search(r"[ .-]", found)):
            continue
        if DATE_TIME.search(found) or PHONE_CONTEXT.search(text[max(0, m.start() - 50):m.start()]):
            continue
        if found.count(".") >= 2 and not found.startswith("+"):
            continue  # dotted digit runs are versions or section numbers more often than phones
        if ARITHMETIC.match(text, m.end()) or ARITHMETIC_BEFORE.search(text[max(0, m.start() - 3):m.start()]):
            continue  # `<<1000-200-400=400>>`: a calculation, not a number to call
        yield Span(m.start(), m.end(), "phone")


def validated_phones(region: str) -> Callable[[str], Iterable[Span]]:
    """Country-aware phones with libphonenumber when it is installed (`phonenumbers`)."""
    import phonenumbers

    def find(text: str) -> Iterable[Span]:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            if PHONE_CONTEXT.search(text[max(0, match.start - 50):match.start]):
                continue
            yield Span(match.start, match.end, "phone", "libphonenumber")

    return find


# ---------------------------------------------------------------- payment

CARD = _compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if four == 6011 or two == 65 or 644 <= three <= 649:
        return "discover"
    if two == 35:
        return "jcb"
    if two in (30, 36, 38):
        return "diners"
    return None


def _cards(text: str) -> Iterable[Span]:
    for m in CARD.finditer(text):
        found = m.group()
        separators = set(re.sub(r"\d", "", found))
        if len(separators) > 1:
            continue  # one consistent separator, or none
        digits = re.sub(r"\D", "", found)
        issuer = card_issuer(digits)
        if issuer and luhn(digits):
            yield Span(m.start(), m.end(), "credit_card", issuer)


IBAN = _compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])")


def iban_valid(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ibans(text: str) -> Iterable[Span]:
    for m in IBAN.finditer(text):
        if iban_valid(m.group()):
            yield Span(m.start(), m.end(), "iban", m.group()[:2])


# ---------------------------------------------------------------- secrets

SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws_access_key_id", _compile(r"(?<![A-Z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    ("aws_secret_access_key", _compile(r"(?i:aws)[\w\s\"'.-]{0,20}(?i:secret|key|token)[\w\s\"'.-]{0,20}?[=:]\s*"
                                       r"[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])")),
    ("github_token", _compile(r"(?<![\w])gh[pousr]_[A-Za-z0-9]{36}(?![\w])")),
    ("gitlab_token", _compile(r"(?<![\w])glpat-[A-Za-z0-9_-]{20,50}(?![\w-])")),
    ("slack_token", _compile(r"(?<![\w])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("slack_webhook", _compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")),
    ("stripe_key", _compile(r"(?<![\w])[sr]k_live_[A-Za-z0-9]{24,}(?![\w])")),
    ("openai_key", _compile(r"(?<![\w])sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}(?![\w])")),
    ("url_password", _compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:([^\s:/@]+)@")),
)


def _secrets(text: str) -> Iterable[Span]:
    for subtype, pattern in SECRETS:
        for m in pattern.finditer(text):
            group = 1 if pattern.groups else 0  # a pattern with a group redacts only the group (the password)
            if subtype == "aws_access_key_id" and m.group().endswith("EXAMPLE"):
                subtype = "example_key"  # AWS's documentation key: still redacted, tagged (§16.7)
            yield Span(m.start(group), m.end(group), "secret", subtype)


JWT = _compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _json_object(part: str) -> bool:
    try:
        return isinstance(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))), dict)
    except ValueError:
        return False


def _jwts(text: str) -> Iterable[Span]:
    for m in JWT.finditer(text):
        header, payload = m.group().split(".")[:2]
        if _json_object(header) and _json_object(payload):
            yield Span(m.start(), m.end(), "jwt", "jwt")


KEY_BEGIN = _compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----")


def _private_keys(text: str) -> Iterable[Span]:
    position = 0
    while (m := KEY_BEGIN.search(text, position)) is not None:
        end_marker = f"-----END {m.group(1)}-----"
        end = text.find(end_marker, m.end())
        stop = len(text) if end < 0 else end + len(end_marker)
        yield Span(m.start(), stop, "private_key", m.group(1).lower().replace(" ", "_"))
        position = stop


QUOTED = _compile(r"([\"'])([A-Za-z0-9+/=_-]{20,})\1")


def entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


def _high_entropy(text: str) -> Iterable[Span]:
    for m in QUOTED.finditer(text):
        value = m.group(2)
        is_hex = all(c in "0123456789abcdefABCDEF" for c in value)
        if entropy(value) > (3.0 if is_hex else 4.5):
            yield Span(m.start(2), m.end(2), "high_entropy", "hex" if is_hex else "base64")


# ---------------------------------------------------------------- all of them

DETECTORS: dict[str, Callable[[str], Iterable[Span]]] = {
    "private_key": _private_keys, "secret": _secrets, "jwt": _jwts, "credit_card": _cards, "iban": _ibans,
    "email": _emails, "ip": _ips, "phone": _phones, "high_entropy": _high_entropy}
# what a text must contain for a detector to find anything (cheap `in` checks before its regex)
TRIGGERS: dict[str, Callable[[str], bool]] = {
    "private_key": lambda t: "-----BEGIN" in t, "jwt": lambda t: "eyJ" in t, "email": lambda t: "@" in t,
    "high_entropy": lambda t: '"' in t or "'" in t}


def resolve_overlaps(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, in text order: by priority of type, then the longer span, then the earlier."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (PRIORITY[s.type], s.start - s.end, s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def find_spans(text: str, types: Iterable[str] = DEFAULT_TYPES, public_only: bool = True,
               phone: Callable[[str], Iterable[Span]] | None = None) -> list[Span]:
    found: list[Span] = []
    for kind in types:
        trigger = TRIGGERS.get(kind)
        if trigger is not None and not trigger(text):
            continue
        if kind == "ip":
            found.extend(_ips(text, public_only))
        elif kind == "phone" and phone is not None:
            found.extend(phone(text))
        else:
            found.extend(DETECTORS[kind](text))
    if any(s.type in ("phone", "credit_card") for s in found) and re.search(r"[A-Z]{2}\d{2}", text):
        # digits inside an IBAN-shaped run (valid or not) are an account number, not a phone or a card
        codes = [m.span() for m in IBAN.finditer(text)]
        found = [s for s in found if s.type not in ("phone", "credit_card")
                 or not any(a <= s.start and s.end <= b for a, b in codes)]
    return resolve_overlaps(found)


def placeholder(span: Span, style: Style) -> str:
    if style == "dolma":
        return f" |||{DOLMA.get(span.type, PLACEHOLDER[span.type])}||| "
    if style == "fake" and span.type in FAKE:
        return FAKE[span.type]
    return f"<{PLACEHOLDER[span.type]}>"


def redact(text: str, spans: list[Span], style: Style = "typed") -> tuple[str, list[Span]]:
    """The text with every span that is not allowed replaced, and all spans with their offsets in
    the output (an allowed span keeps its text, shifted by the replacements before it)."""
    pieces, out, shift, cursor = [], [], 0, 0
    for span in spans:  # in text order, non-overlapping
        pieces.append(text[cursor:span.start])
        value = text[span.start:span.end] if span.allow_reason else placeholder(span, style)
        out.append(replace(span, out_start=span.start + shift, out_end=span.start + shift + len(value)))
        pieces.append(value)
        shift += len(value) - (span.end - span.start)
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), out

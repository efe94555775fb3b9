"""A labelled PII test set, generated (seeded): valid values of every regex type planted in sentences, and hard
negatives that look like them (versions, dates, times, ISBNs, hex, reserved emails, private and documentation
addresses, numbers that fail Luhn or mod 97, MACs, UUIDs, C++ scopes, order numbers)."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string

TEMPLATES = ("Please reach {} for details.", "Contact: {}", "the value was {} yesterday", "({}) see the log",
             "Note - {}, as agreed.")


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = body + check
        total = sum(int(c) if i % 2 == 0 else (int(c) * 2 - 9 if int(c) > 4 else int(c) * 2)
                    for i, c in enumerate(reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError


def _iban(country: str, bban: str) -> str:
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def positives(seed: int = 0) -> list[tuple[str, str]]:
    """(value, type) pairs: 330 valid values."""
    rng = random.Random(seed)
    alnum = string.ascii_letters + string.digits
    word = lambda k: "".join(rng.choice(string.ascii_lowercase) for _ in range(k))  # noqa: E731
    out: list[tuple[str, str]] = []
    for _ in range(60):
        out.append((f"{word(5)}.{word(4)}@{word(6)}-{word(3)}.{rng.choice(['io', 'com', 'de', 'co.uk', 'net'])}",
                    "email"))
    for _ in range(50):
        a, b, c = rng.randint(200, 989), rng.randint(200, 989), rng.randint(1000, 9999)
        out.append((rng.choice([f"+1 {a}-{b}-{c}", f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+44 20 {b} {c}",
                                f"+49 30 {c} {c}"]), "phone"))
    while sum(t == "ip" for _, t in out) < 40:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global:
            out.append((str(address), "ip"))
    for _ in range(20):
        groups = [f"{rng.randint(0x2a00, 0x2aff):x}"] + [f"{rng.getrandbits(16):x}" for _ in range(7)]
        out.append((str(ipaddress.IPv6Address(":".join(groups))), "ip"))
    for _ in range(40):
        prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
        digits = _luhn_complete(prefix, length, rng)
        sep = rng.choice(["", " ", "-"])
        out.append((sep.join(digits[i:i + 4] for i in range(0, len(digits), 4)) if sep else digits, "credit_card"))
    for _ in range(30):
        country, n = rng.choice([("DE", 18), ("GB", 18), ("FR", 23)])
        bban = ("WEST" if country == "GB" else "") + "".join(rng.choice(string.digits) for _ in range(
            n - (4 if country == "GB" else 0)))
        out.append((_iban(country, bban), "iban"))
    for _ in range(90):
        kind = rng.randrange(9)
        if kind == 0:
            value = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        elif kind == 1:
            value = "ghp_" + "".join(rng.choice(alnum) for _ in range(36))
        elif kind == 2:
            value = "glpat-" + "".join(rng.choice(alnum) for _ in range(20))
        elif kind == 3:
            value = "xoxb-" + "-".join("".join(rng.choice(string.digits) for _ in range(11)) for _ in range(2))
        elif kind == 4:
            value = "sk_live_" + "".join(rng.choice(alnum) for _ in range(24))
        elif kind == 5:
            value = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': word(6)})}.{word(20)}"
        elif kind == 6:
            body = "\n".join("".join(rng.choice(alnum) for _ in range(64)) for _ in range(4))
            value = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
        elif kind == 7:
            value = "sk-" + "".join(rng.choice(alnum) for _ in range(20)) + "T3BlbkFJ" + \
                "".join(rng.choice(alnum) for _ in range(20))
        else:
            value = "https://hooks.slack.com/services/T" + "".join(rng.choice(alnum) for _ in range(20))
        out.append((value, {5: "jwt", 6: "private_key"}.get(kind, "secret")))
    return out


def negatives(seed: int = 0) -> list[str]:
    """330 values that look like PII and are not."""
    rng = random.Random(seed + 1)
    out: list[str] = []
    for _ in range(30):
        out.append(f"{rng.choice(['version', 'v', 'release', 'build', 'firmware'])} {rng.randint(1, 9)}."
                   f"{rng.randint(0, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 200)}")
    for _ in range(30):
        out.append(f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                   f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
    for _ in range(20):
        out.append(f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}")
    for _ in range(20):
        out.append(f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-"
                   f"{rng.randint(0, 9)}")
    for _ in range(20):
        out.append(f"0x{rng.getrandbits(48):012x}")
    for _ in range(20):
        domain = rng.choice(["example.com", "example.org", "foo.test", "mail.example", "x.invalid"])
        out.append(f"{rng.choice(['user', 'admin', 'jane'])}@{domain}")
    for _ in range(30):
        out.append(str(rng.choice([ipaddress.IPv4Address("192.168.0.0") + rng.randrange(65536),
                                   ipaddress.IPv4Address("10.0.0.0") + rng.randrange(2**24),
                                   ipaddress.IPv4Address("192.0.2.0") + rng.randrange(256)])))
    for _ in range(20):
        digits = _luhn_complete("4", 16, rng)
        bad = digits[:-1] + str((int(digits[-1]) + rng.randint(1, 9)) % 10)
        out.append(" ".join(bad[i:i + 4] for i in range(0, 16, 4)))
    for _ in range(20):
        good = _iban("DE", "".join(rng.choice(string.digits) for _ in range(18))).replace(" ", "")
        bad = good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10)
        out.append(" ".join(bad[i:i + 4] for i in range(0, len(bad), 4)))
    for _ in range(20):
        out.append(":".join(f"{rng.getrandbits(8):02X}" for _ in range(6)))  # MAC addresses
    for _ in range(20):
        out.append(f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-"
                   f"{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}")  # UUIDs
    out += [f"std::{w}" for w in ("vector", "map", "string", "move", "cout")] * 2
    out += [f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}" for _ in range(10)]
    out += [f"order #{rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}" for _ in range(10)]
    out += [f"${rng.randint(1, 999)},{rng.randint(100, 999)}.{rng.randint(10, 99)}" for _ in range(10)]
    out += [f"section {rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}" for _ in range(10)]
    out += [f"{rng.randint(1900, 1999)}-{rng.randint(2000, 2030)}" for _ in range(10)]
    out += [f"AKIAIOSFODNN{rng.randint(0, 9)}" for _ in range(10)]  # too short for a key id
    return out


def in_sentence(value: str, k: int) -> str:
    return TEMPLATES[k % len(TEMPLATES)].format(value)

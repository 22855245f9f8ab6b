"""Normalise and hash the identifiers X matches on.

Pure functions: no Flask, RQ or database. Raw email and phone numbers enter
here and only SHA-256 hex digests leave, so nothing downstream can leak them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

import phonenumbers

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SPACE = re.compile(r"\s")
_TWCLID_PARAM = re.compile(r"(?:^|&)twclid=([^&]*)")
_EMAIL_ANYWHERE = re.compile(r"[^@\s<>()\[\],;:\"']+@[^@\s<>()\[\],;:\"']+\.[A-Za-z]{2,}")

EMAIL_KEYS = ("email", "Email", "EMAIL", "email_address", "emailAddress")
PHONE_KEYS = ("phone", "Phone", "PHONE", "phone_number", "phoneNumber", "mobile")
PHONE_WORDS = ("phone", "mobile")  # any key holding one of these names a phone
PHONE_NAMES = ("tel", "telephone", "cell", "fax", "msisdn", "sms")
KEPT_IDS = ("order_id", "orderId", "conversion_id", "checkout_id", "messageId")
TWCLID_MAX = 200


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_hashed(value: str) -> bool:
    """A 64-hex value is taken as already hashed and passed through."""
    return bool(_HEX64.match(value))


def hash_email(raw: object) -> str | None:
    """Trim, lower-case, SHA-256; None for anything that is not an email."""
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if is_hashed(value):
        return value.lower()
    value = value.lower()
    if not _EMAIL.match(value):
        return None
    return sha256_hex(value)


def normalise_phone(raw: object, region: str | None = None) -> str | None:
    """E.164 with the leading '+', or None when it cannot be a phone number.

    Local formats such as '(415) 555-2671' need the site's default region.
    A *possible* number (right length for its region) is enough: numbers in
    ranges newer than phonenumbers' metadata, and X's own documented example
    (123) 456-7890, are real to X.
    """
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        return None
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else (region or None))
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_phone(raw: object, region: str | None = None) -> str | None:
    if isinstance(raw, str) and is_hashed(raw.strip()):
        return raw.strip().lower()
    e164 = normalise_phone(raw, region)
    return sha256_hex(e164) if e164 else None


def first_hashed(sources: list[dict], keys: tuple[str, ...], hasher) -> str | None:
    """The hash of the first usable value under any of `keys` in `sources`."""
    for source in sources:
        for key in keys:
            if key in source:
                hashed = hasher(source[key])
                if hashed:
                    return hashed
    return None


def twclid_from_url(url: object) -> str | None:
    """The first twclid parameter of a URL's query (not its fragment)."""
    if not isinstance(url, str) or "twclid" not in url:
        return None
    found = _TWCLID_PARAM.search(url.partition("#")[0].partition("?")[2])
    return clean_twclid(unquote_plus(found.group(1))) if found else None


def twclid_from_cookie(value: object) -> str | None:
    """The click id in a first-party cookie: bare (xtag's `_xtag_twclid`), or
    X's own `_twclid`, which may hold URL-encoded JSON with a `twclid` field."""
    if not isinstance(value, str):
        return None
    text = unquote(value.strip())
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return clean_twclid(data.get("twclid")) if isinstance(data, dict) else None
    return clean_twclid(text)


def clean_twclid(value: object) -> str | None:
    """A twclid is sent to X as is; only trim it and refuse junk."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > TWCLID_MAX or _SPACE.search(value):
        return None
    return value


def _phone_key(key: object) -> bool:
    """A key that names a phone number (phone, tel, mobile_phone, cellPhone, ...)."""
    return isinstance(key, str) and _phone_name(key)


@functools.lru_cache(maxsize=4096)  # the same few keys in every message
def _phone_name(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return any(word in name for word in PHONE_WORDS) or name in PHONE_NAMES


def _phone_like(value: object) -> bool:
    """Enough digits to be a phone number (not a flag like is_mobile: true)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    return sum(c.isdigit() for c in str(value)) >= 7


def _hash_emails(text: str) -> str:
    return _EMAIL_ANYWHERE.sub(lambda m: sha256_hex(m.group(0).lower()), text)


def _scrub_text(text: str) -> str:
    """Emails in a string hashed; in a URL's query, percent-decoded first,
    and the values of parameters that name a phone hashed too."""
    if "%" in text or "?" in text:
        scheme, netloc, path, query, fragment = urlsplit(text) if "://" in text else ("",) * 5
        if query and any(_phone_key(unquote_plus(p.partition("=")[0])) for p in query.split("&")):
            pairs = [
                (k, sha256_hex(v) if _phone_key(k) and v else v)
                for k, v in parse_qsl(query, keep_blank_values=True)
            ]
            query = urlencode(pairs, safe="@")
            text = urlunsplit((scheme, netloc, path, query, fragment))
        if "%40" in text.upper():
            text = unquote(text)
    return _hash_emails(text) if "@" in text else text


def scrub(value: object, key: object = None) -> object:
    """Raw PII out of free-form data, at any depth: emails (in any string or
    object key, URLs decoded) hashed; values under keys that name an email
    or a phone dropped; device and order ids kept as they are."""
    if isinstance(value, str):
        return value if key in KEPT_IDS else _scrub_text(value)
    if isinstance(value, dict):
        return {
            _scrub_text(k) if isinstance(k, str) else k: scrub(v, k)
            for k, v in value.items()
            if k not in EMAIL_KEYS and not (_phone_key(k) and _phone_like(v))
        }
    if isinstance(value, list):
        return [scrub(v, key) for v in value]
    return value


def scrub_id(value: object) -> str | None:
    """A visitor id as stored: an email or a phone number used as an id is
    hashed (a phone as X hashes it), anything else kept."""
    if value in (None, ""):
        return None
    text = str(value)
    e164 = normalise_phone(text) if text.strip().startswith("+") else None
    return sha256_hex(e164) if e164 else _scrub_text(text)

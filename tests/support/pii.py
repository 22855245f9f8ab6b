"""Raw personal data and secrets the tests send in, and a scan that proves
none of it was stored: every test's teardown runs `leaks()` over Redis and
the whole database."""

from __future__ import annotations

from sqlalchemy import select

RAW_EMAIL = "Jane.Doe+xtag@Example.com"
RAW_PHONE_LOCAL = "(415) 555-2671"
RAW_PHONE_E164 = "+14155552671"
SECRETS = (
    "pixel-token-secret-value",
    "consumer-secret-value",
    "access-token-secret-value",
    "oauth2-refresh-token-value",
)
NEEDLES = (RAW_EMAIL.lower(), "jane.doe", "4155552671", "415) 555", *SECRETS)


def _redis_text(client) -> str:
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(key.decode(errors="replace"))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
    return "\n".join(parts)


def _database_text(db) -> str:
    parts = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)):
            parts.append(repr(tuple(row)))
    return "\n".join(parts)


def found_in(text: str) -> list[str]:
    """The raw emails, phones and secrets in a text."""
    lowered = text.lower()
    return [needle for needle in NEEDLES if needle.lower() in lowered]


def leaks(db, redis_client) -> list[str]:
    """Where any raw email, phone or secret sits in storage ('redis: needle')."""
    found = []
    for where, text in (("redis", _redis_text(redis_client)), ("database", _database_text(db))):
        found += [f"{where}: {needle}" for needle in found_in(text)]
    return found

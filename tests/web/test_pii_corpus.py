"""No raw email or phone number is kept anywhere (issue 13): a corpus of the
shapes sites really send them in goes through the collector and the worker,
then the database, Redis (its AOF included) and the logs are searched for
every raw value, as typed and as a URL would carry it."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import factories
from tests.support.sending import basic

EMAILS = [f"person{n}.corpus@example.org" for n in range(40)]
PHONES = [f"+1415555{n:04d}" for n in range(100, 140)]


def e(n: int) -> str:
    return EMAILS[n]


def p(n: int) -> str:
    return PHONES[n]


def url(n: int) -> str:
    return f"https://shop.example/thanks?email={quote(e(n))}&phone={quote(p(n))}&twclid=tw"


CORPUS = [
    ("identify", {"traits": {"email": e(0), "phone": p(0)}}),
    ("identify", {"context": {"traits": {"email": e(1), "phone": p(1)}}}),
    ("track", {"properties": {"email": e(2)}}),
    ("track", {"properties": {"Email": e(3), "PHONE": p(3)}}),
    ("track", {"properties": {"contact": {"email_address": e(4), "mobile_phone": p(4)}}}),
    ("track", {"properties": {"note": f"call me at the desk, or mail {e(5)}"}}),
    ("track", {"properties": {e(6): "a key that is an email"}}),
    ("track", {"context": {"page": {"url": url(7)}}}),
    ("track", {"properties": {"url": url(8)}}),
    ("track", {"context": {"page": {"referrer": url(9)}}}),
    ("track", {"context": {"page": {"search": f"?email={quote(e(10))}"}}}),
    ("track", {"userId": p(11)}),
    ("track", {"anonymousId": e(12)}),
    ("track", {"userId": e(13)}),
    ("track", {"properties": {"tel": p(14)}}),
    ("track", {"properties": {"telephone": p(15)}}),
    ("track", {"properties": {"billing": {"cellPhone": p(16)}}}),
    ("track", {"properties": {"phone_number": p(17)}}),
    ("track", {"properties": {"items": [{"owner": e(18)}, {"owner": "nobody"}]}}),
    ("track", {"properties": {"customer": {"emails": [e(19), e(20)]}}}),
    ("page", {"name": f"Thanks {e(21)}"}),
    ("track", {"event": f"Signed up {e(22)}"}),
    ("track", {"context": {"campaign": {"content": e(23)}}}),
    ("track", {"properties": {"payload": '{"email": "' + e(24) + '"}'}}),
    ("track", {"properties": {"encoded": quote(e(25))}}),
    ("alias", {"previousId": e(26), "userId": "u-26"}),
    ("track", {"properties": {"contacts": [{"mobile": p(27)}, {"fax": p(28)}]}}),
    ("screen", {"name": "Checkout", "properties": {"email": e(29)}}),
    ("group", {"groupId": "g-1", "traits": {"email": e(30), "phone": p(30)}}),
    ("track", {"context": {"traits": {"phoneNumber": p(31), "email": e(31)}}}),
    ("track", {"properties": {"deep": {"a": {"b": {"c": {"email": e(32), "msisdn": p(32)}}}}}}),
    ("identify", {"userId": p(33), "traits": {"email": e(33)}}),
]


def needles() -> list[str]:
    """Every raw value, as typed, lower-cased and percent-encoded."""
    values = EMAILS + PHONES + [p[2:] for p in PHONES]
    return sorted({v for raw in values for v in (raw, raw.lower(), quote(raw, safe=""))})


def aof_text(redis_url: str) -> str:
    """The embedded Redis's append-only files (none on the second CI round's server)."""
    if not redis_url.startswith("unix://"):
        return ""
    folder = Path(redis_url[len("unix://") :].split("?")[0]).parent
    return "".join(f.read_bytes().decode(errors="replace") for f in folder.rglob("*.aof*"))


@pytest.fixture
def site(ctx):
    return factories.site(default_phone_region="US")


def test_no_raw_email_or_phone_is_kept_anywhere(client, site, work, caplog, redis_url, app):
    import time

    from tests.support.pii import _database_text, _redis_text
    from xtag.extensions import db
    from xtag.pipeline import queues

    assert len(CORPUS) >= 30
    caplog.set_level(logging.DEBUG)
    for n, (route, fields) in enumerate(CORPUS):
        message = {"anonymousId": f"a-{n}", "event": "Order Completed", **fields}
        r = client.post(f"/v1/{route}", json=message, headers=basic(site.write_key))
        assert r.status_code == 200, (n, r.json)
    time.sleep(1.2)  # the AOF is written at least every second
    work()
    stored = {
        "database": _database_text(db),
        "redis": _redis_text(queues.redis_client(app)),
        "aof": aof_text(redis_url),
        "logs": "\n".join(record.getMessage() for record in caplog.records),
    }
    assert stored["aof"] or not redis_url.startswith("unix://")  # the AOF was read
    found = [
        (where, needle) for where, text in stored.items() for needle in needles() if needle in text
    ]
    assert found == []

"""The site's X pixel script (GET /v1/pixel.js?writeKey=K), which xtag.js
loads on a page's first track call: the site's pixel id and the event ids and
conversion id paths of its mappings to that pixel, nothing secret, nothing at
all when the site has no pixel or is in test mode."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import factories
from xtag.extensions import db
from xtag.models import Mapping

SHOP = "https://shop.example"
CONFIG = re.compile(r"\}\)\(window, document, navigator, (\{.*\})\);\s*$", re.S)


@pytest.fixture
def site(ctx):
    site = factories.site(allowed_origins=[SHOP], x_pixel_id="o8z6j")
    factories.mapping(site, "Order Completed")
    return site


def first_mapping(site) -> Mapping:
    """The site's first mapping (ids are not 1 on PostgreSQL, whose sequences go on)."""
    return db.session.query(Mapping).filter_by(site_id=site.id).order_by(Mapping.id).first()


def fetch(client, site, **headers):
    return client.get(f"/v1/pixel.js?writeKey={site.write_key}", headers=headers)


def config_of(response) -> dict:
    found = CONFIG.search(response.text)
    assert found, response.text[-300:]
    return json.loads(found.group(1))


def test_an_unknown_write_key_is_a_401_like_every_collector_route(client, ctx):
    r = client.get("/v1/pixel.js?writeKey=no-such-key")
    assert (r.status_code, r.json["code"]) == (401, "unauthorized")
    assert r.json["error"] == "unknown write key"
    r = client.get("/v1/pixel.js")
    assert (r.status_code, r.json["code"]) == (401, "unauthorized")
    assert "writeKey" in r.json["error"]


def test_the_script_is_javascript_browsers_keep_for_a_minute(client, site):
    r = fetch(client, site)
    assert r.status_code == 200
    assert r.mimetype == "application/javascript"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert (r.cache_control.public, r.cache_control.max_age) == (True, 60)
    assert "XTAG_PIXEL_CONFIG" not in r.text
    again = fetch(client, site, **{"If-None-Match": r.headers["ETag"]})
    assert (again.status_code, again.data) == (304, b"")


def test_it_holds_the_pixel_and_the_site_s_mappings_to_it(client, site):
    factories.mapping(site, "Signup", x_event_id="tw-o8z6j-abc12")
    factories.mapping(site, "Checkout Step", x_event_id="q1w2e").enabled = False
    factories.mapping(site, "Lead", pixel_id="zz9zz")  # another pixel: the server's alone
    ref = factories.mapping(site, "Quote Accepted", x_event_id="k3k3k")
    ref.fields = {"conversion_id": "properties.quote.ref"}
    site.require_consent = True
    db.session.commit()

    assert config_of(fetch(client, site)) == {
        "pixel_id": "o8z6j",
        "require_consent": True,
        "rules": [
            {"event": "Order Completed", "event_id": "tw-o8z6j-o87ne", "conversion_id": None},
            {"event": "Signup", "event_id": "tw-o8z6j-abc12", "conversion_id": None},
            {
                "event": "Quote Accepted",
                "event_id": "tw-o8z6j-k3k3k",
                "conversion_id": "properties.quote.ref",
            },
        ],
    }


@pytest.mark.parametrize(
    "path",
    ["userId", "timestamp", "context.traits.order", "properties.email", "properties.user.phone"],
)
def test_no_pixel_event_where_the_browser_cannot_know_the_server_s_id(client, site, path):
    """The server sends what it resolved after dropping identifiers and
    hashing personal data: the browser would fire another id, and X count twice."""
    mapping = first_mapping(site)
    mapping.fields = {"conversion_id": path}
    db.session.commit()
    assert fetch(client, site).data == b""


def test_nothing_secret_is_in_it_or_in_the_log(client, site, caplog):
    caplog.set_level("INFO")
    text = fetch(client, site).text
    assert "pixel-token-secret-value" not in text  # the pixel's connection to X
    assert site.write_key not in text
    assert "o8z6j" in text
    assert "GET /v1/pixel.js 200" in caplog.text
    assert site.write_key not in caplog.text  # the request log leaves the query out


@pytest.mark.parametrize(
    "change",
    [{"x_pixel_id": None}, {"test_mode": True}],
    ids=["no pixel", "test mode"],
)
def test_empty_without_a_pixel_or_in_test_mode(client, site, change):
    for name, value in change.items():
        setattr(site, name, value)
    db.session.commit()
    r = fetch(client, site)
    assert (r.status_code, r.data, r.mimetype) == (200, b"", "application/javascript")
    assert r.cache_control.max_age == 60


def test_empty_when_no_mapping_uses_the_site_s_pixel(client, site):
    first_mapping(site).enabled = False
    db.session.commit()
    assert fetch(client, site).data == b""


def test_a_page_on_an_origin_the_site_does_not_allow_is_refused(client, site):
    assert fetch(client, site, Origin=SHOP).status_code == 200
    r = fetch(client, site, Origin="https://evil.example")
    assert (r.status_code, r.json["code"]) == (403, "forbidden_origin")

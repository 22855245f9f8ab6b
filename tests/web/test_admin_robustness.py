"""The admin and the API hold against what an attacker types in a URL or a
form (issue 13, point 5): ids no column can hold, times beyond the
calendar, a preview nested past Python's limit, a next= that splits
headers. A 404 or a 400 each time, never a 500."""

from __future__ import annotations

import pytest

from tests.support import factories
from tests.support.web import csrf, login, token_for

HUGE = "99999999999999999999999"


@pytest.mark.parametrize(
    "path",
    [
        f"/sites/{HUGE}",
        f"/sites/{HUGE}/mappings",
        f"/mappings/{HUGE}",
        f"/pixels/{HUGE}",
        f"/deliveries/{HUGE}",
        f"/users/{HUGE}",
    ],
)
def test_ids_beyond_any_column_are_404(client, ctx, path):
    login(client, "admin")
    assert client.get(path).status_code == 404


def test_filters_beyond_range_are_ignored_or_refused(client, ctx):
    login(client, "marketer")
    assert client.get(f"/events?site_id={HUGE}").status_code == 400
    assert client.get("/events?site_id=").status_code == 200  # the form's "all sites"
    assert client.get("/deliveries?since=9999-12-31T23:59:59-14:00").status_code == 200
    admin = token_for("admin")
    r = client.get("/api/v1/deliveries?since=9999-12-31T23:59:59-14:00", headers=admin)
    assert r.status_code == 400 and r.json["error"]["field"] == "since"
    assert client.get(f"/api/v1/events?site_id={HUGE}", headers=admin).status_code == 400
    assert client.get(f"/api/v1/deliveries/{HUGE}", headers=admin).status_code == 404


def test_a_preview_nested_past_the_limit_is_a_message_error(client, ctx):
    site = factories.site()
    login(client, "marketer")
    token = csrf(client, f"/sites/{site.id}/mappings")
    r = client.post(
        f"/sites/{site.id}/preview",
        data={"csrf_token": token, "v-message": "[" * 100_000, "mapping_id": HUGE},
    )
    assert r.status_code == 200
    assert "not valid JSON" in r.get_data(as_text=True)


def test_a_next_that_splits_headers_is_ignored_after_login(client, ctx):
    factories.user("a@example.com", password="correct horse")
    r = client.post(
        "/login?next=/%0d%0aSet-Cookie:%20session=forged",
        data={"email": "a@example.com", "password": "correct horse"},
    )
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/") and "forged" not in r.headers["Location"]

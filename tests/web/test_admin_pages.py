"""Admin pages for sites, events and deliveries: forms, CSRF, roles, headers."""

from __future__ import annotations

import html
import json
import re

import pytest
from sqlalchemy import func, select

from tests.support import factories, pii
from tests.support.sending import basic, order
from tests.support.shop import PIXEL, setup_shop
from tests.support.web import csrf, login
from xtag.extensions import db
from xtag.models import Delivery, Mapping, Site


@pytest.mark.parametrize("path", ["/", "/sites", "/events", "/deliveries"])
def test_pages_need_login_and_render_with_strict_headers(client, ctx, path):
    assert client.get(path).status_code == 302
    login(client)
    r = client.get(path)
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "same-origin"
    for tag in re.findall(r"<script[^>]*>", r.get_data(as_text=True)):  # no inline script
        assert re.search(r'src="/static/|type="application/json"', tag), tag


def test_add_a_site_see_its_snippet_and_edit_it(client, ctx):
    login(client)
    r = client.post(
        "/sites",
        data={
            "name": "Shop",
            "allowed_origins": "https://shop.example\n",
            "default_phone_region": "us",
        },
    )
    assert r.status_code == 302
    site = db.session.scalar(select(Site))
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert site.write_key in page and "http://localhost/static/xtag.js" not in page
    assert '"http://localhost","' + site.write_key + '"' in page.replace("&#34;", '"')
    assert "never: install the snippet" in page
    r = client.post(f"/sites/{site.id}", data={"name": "Shop 2", "allowed_origins": "shop.example"})
    assert r.status_code == 200 and "not an origin" in r.get_data(as_text=True)
    r = client.post(f"/sites/{site.id}", data={"name": "Shop 2", "default_phone_region": "GB"})
    assert r.status_code == 302
    db.session.expire_all()
    assert (site.name, site.default_phone_region, site.allowed_origins) == ("Shop 2", "GB", [])


def test_site_form_without_csrf_token_is_rejected(app, client, ctx):
    login(client)
    app.config["WTF_CSRF_ENABLED"] = True
    r = client.post("/sites", data={"name": "Shop"})
    assert r.status_code == 400 and db.session.scalar(select(Site)) is None
    token = csrf(client, "/sites")
    assert client.post("/sites", data={"name": "Shop", "csrf_token": token}).status_code == 302


def test_debugger_and_delivery_log_show_the_flow_and_admins_retry(
    x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    fake_x.fail_next(404)
    client.post("/v1/track", json=order(1), headers=basic(site.write_key))
    deliver()
    login(client, "admin")
    events = client.get(f"/events?site_id={site.id}&event_name=Order+Completed").get_data(
        as_text=True
    )
    assert "Order Completed" in events and "forwarded" in events and "o8z6j" in events
    log = client.get("/deliveries?status=failed&pixel=o8z6j").get_data(as_text=True)
    delivery = db.session.scalar(select(Delivery))
    assert f"/deliveries/{delivery.id}" in log and "failed" in log
    detail = client.get(f"/deliveries/{delivery.id}").get_data(as_text=True)
    assert (
        "Retry now" in detail
        and "HTTP 404" in detail
        and "hashed" not in detail.split("Conversions")[1]
    )
    r = client.post(f"/deliveries/{delivery.id}/retry")
    assert r.status_code == 302
    deliver()
    db.session.expire_all()
    assert delivery.status == "delivered"


def test_marketers_cannot_retry_and_csrf_guards_the_button(
    app, x_app, client, ctx, fake_x, deliver
):
    site = setup_shop(fake_x)
    fake_x.fail_next(404)
    client.post("/v1/track", json=order(1), headers=basic(site.write_key))
    deliver()
    delivery_id = db.session.scalar(select(Delivery.id))
    login(client, "marketer")
    assert "Retry now" not in client.get(f"/deliveries/{delivery_id}").get_data(as_text=True)
    assert client.post(f"/deliveries/{delivery_id}/retry").status_code == 403
    client.post("/logout")
    login(client, "admin")
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(f"/deliveries/{delivery_id}/retry").status_code == 400
    assert (
        client.post(
            f"/deliveries/{delivery_id}/retry",
            data={"csrf_token": csrf(client, f"/deliveries/{delivery_id}")},
        ).status_code
        == 302
    )


def test_pixels_mappings_toggle_delete_and_preview(client, ctx, fake_x):
    from xtag.models import Mapping, Pixel

    site = factories.site()
    connection = factories.connection()
    login(client)
    page = f"/sites/{site.id}/mappings"
    assert "No mappings yet" in client.get(page).get_data(as_text=True)
    r = client.post(
        page,
        data={
            "action": "pixel",
            "p-pixel_id": "o8z6j",
            "p-name": "Main",
            "p-connection_id": str(connection.id),
        },
    )
    assert r.status_code == 302
    pixel_id = db.session.scalar(select(Pixel.id))
    bad = client.post(
        page,
        data={
            "action": "mapping",
            "m-event_name": "Order Completed",
            "m-pixel": str(pixel_id),
            "m-x_event_id": "tw-zzz-abc",
        },
    )
    assert "belongs to pixel zzz" in bad.get_data(as_text=True)
    r = client.post(
        page,
        data={
            "action": "mapping",
            "m-event_name": "Order Completed",
            "m-pixel": str(pixel_id),
            "m-x_event_id": "o87ne",
            "m-fields": "value=properties.total",
        },
    )
    assert r.status_code == 302
    mapping = db.session.scalar(select(Mapping))
    assert mapping.fields == {"value": "properties.total"}
    message = (
        '{"event": "Order Completed", "anonymousId": "a", "properties": {"total": 12},'
        ' "context": {"twclid": "tw-1"}}'
    )
    shown = client.post(page, data={"action": "preview", "v-message": message}).get_data(
        as_text=True
    )
    assert "Outcome: <strong>forwarded</strong>" in shown and '"value": "12.00"' in shown
    shown = client.post(page, data={"action": "preview", "v-message": "{nope"}).get_data(
        as_text=True
    )
    assert "not valid JSON" in shown
    client.post(f"/mappings/{mapping.id}/toggle")
    db.session.expire_all()
    assert mapping.enabled is False
    client.post(f"/mappings/{mapping.id}/delete")
    assert db.session.scalar(select(Mapping)) is None


def test_connections_page_is_admin_only_and_never_shows_a_secret(client, ctx):

    login(client, "marketer")
    assert client.get("/connections").status_code == 403
    client.post("/logout")
    login(client, "admin")
    incomplete = client.post(
        "/connections", data={"name": "X", "auth_type": "oauth1", "consumer_key": "ck"}
    )
    assert "oauth1 credentials need consumer_secret" in incomplete.get_data(as_text=True)
    r = client.post(
        "/connections", data={"name": "X", "auth_type": "pixel_token", "token": pii.SECRETS[0]}
    )
    assert r.status_code == 302
    page = client.get("/connections").get_data(as_text=True)
    assert "****" + pii.SECRETS[0][-4:] in page and pii.SECRETS[0] not in page


def test_dashboard_charts_the_last_day_and_links_failures(x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    batch = [order(1), order(2), order(3, event="Newsletter Signup")]
    client.post("/v1/batch", json={"batch": batch}, headers=basic(site.write_key))
    deliver()
    fake_x.fail_next(403)  # refused: the delivery fails and the connection turns unhealthy
    client.post("/v1/track", json=order(4), headers=basic(site.write_key))
    deliver()
    failed = db.session.scalar(select(Delivery).where(Delivery.status == "failed"))
    login(client)
    page = client.get("/").get_data(as_text=True)
    data = json.loads(
        html.unescape(re.search(r'id="chart-data">(.*?)</script>', page, re.S).group(1))
    )
    assert sum(data["events"]["received"]) == 4 and sum(data["events"]["forwarded"]) == 3
    assert data["drops"] == [{"reason": "unmapped", "count": 1}]
    assert data["conversions"] == [{"pixel_id": PIXEL, "delivered": 2, "failed": 1, "pending": 0}]
    assert f'href="/deliveries/{failed.id}"' in page
    assert "is unhealthy" in page and "Ask an admin to reconnect it" in page
    assert "XTAG_EVENT_RETENTION_DAYS" in page and "30 days" in page


def _shop_with_mapping(client, fake_x):
    from xtag.models import Mapping

    site = setup_shop(fake_x)
    client.post("/v1/track", json=order(1), headers=basic(site.write_key))
    return site, db.session.scalar(select(Mapping))


def test_live_preview_follows_the_mapping_as_typed(x_app, client, ctx, fake_x, work):
    site, mapping = _shop_with_mapping(client, fake_x)
    work()
    login(client)
    message = json.dumps(order(7, event="Signed Up", properties={"plan": "pro", "price": 9}))
    draft = {
        "m-event_name": "Signed Up",
        "m-pixel": str(mapping.pixel_key),
        "m-x_event_id": "o87ne",
        "m-description": "Trial started",
        "m-fields": "value=properties.price",
        "v-message": message,
    }
    shown = client.post(f"/sites/{site.id}/preview", data=draft).get_data(as_text=True)
    assert "<html" not in shown  # a fragment for htmx to swap in
    assert "Outcome: <strong>forwarded</strong>" in shown
    assert '"description": "Trial started"' in shown and '"value": "9.00"' in shown
    half_typed = {**draft, "m-x_event_id": "tw-zzz-1"}
    shown = client.post(f"/sites/{site.id}/preview", data=half_typed).get_data(as_text=True)
    assert "cannot be used yet" in shown and "Outcome: <strong>unmapped</strong>" in shown
    not_json = client.post(f"/sites/{site.id}/preview", data={**draft, "v-message": "{nope"})
    assert "The message cannot be previewed: the message is not valid JSON" in not_json.get_data(
        as_text=True
    )
    assert "cannot be used yet" not in not_json.get_data(as_text=True)  # the mapping is fine
    assert db.session.scalar(select(func.count(Mapping.id))) == 1  # nothing was saved


def test_edit_a_mapping_with_its_preview_and_the_latest_real_event(
    x_app, client, ctx, fake_x, work
):
    site, mapping = _shop_with_mapping(client, fake_x)
    work()
    login(client)
    page = client.get(f"/mappings/{mapping.id}").get_data(as_text=True)
    assert 'value="Order Completed"' in page and "order-1" in page  # the real event, to preview
    sample = client.get(f"/sites/{site.id}/sample?m-event_name=Order+Completed")
    assert "order-1" in sample.get_data(as_text=True) and "<html" not in sample.get_data(
        as_text=True
    )
    edited = {
        "m-event_name": "Order Completed",
        "m-pixel": str(mapping.pixel_key),
        "m-x_event_id": "o87ne",
        "m-fields": "value=properties.revenue\ncurrency=properties.currency",
        "v-message": json.dumps(order(1)),
        "mapping_id": str(mapping.id),
    }
    shown = client.post(f"/sites/{site.id}/preview", data=edited).get_data(as_text=True)
    assert shown.count("<pre") == 1  # in place of the saved mapping, not beside it
    r = client.post(f"/mappings/{mapping.id}", data={**edited, "m-description": "Bought"})
    assert r.status_code == 302
    db.session.expire_all()
    assert mapping.description == "Bought" and mapping.enabled is False  # box left unticked
    bad = client.post(f"/mappings/{mapping.id}", data={**edited, "m-x_event_id": "no way"})
    assert bad.status_code == 200 and "field-error" in bad.get_data(as_text=True)


def test_new_mapping_routes_refuse_a_missing_csrf_token(app, x_app, client, ctx, fake_x):
    site, mapping = _shop_with_mapping(client, fake_x)
    login(client)
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post(f"/sites/{site.id}/preview", data={"v-message": "{}"}).status_code == 400
    assert client.post(f"/mappings/{mapping.id}", data={"m-event_name": "x"}).status_code == 400


def test_retry_all_failed_for_a_filter(app, x_app, client, ctx, fake_x, deliver):
    site = setup_shop(fake_x)
    fake_x.fail_next(404, n=2)
    for n in (1, 2):
        client.post("/v1/track", json=order(n), headers=basic(site.write_key))
        deliver()
    assert db.session.scalar(select(func.count()).where(Delivery.status == "failed")) == 2
    login(client, "marketer")
    page = client.get("/deliveries?status=failed").get_data(as_text=True)
    assert "Retry all failed" not in page
    assert client.post("/deliveries/retry").status_code == 403
    client.post("/logout")
    login(client, "admin")
    page = client.get(f"/deliveries?status=failed&pixel={PIXEL}").get_data(as_text=True)
    assert f"Retry all failed for pixel {PIXEL}" in page
    assert client.get("/deliveries?since=yesterday").status_code == 200  # a clear message
    r = client.post("/deliveries/retry", data={"pixel": "other1"})
    assert r.status_code == 302
    assert "0 failed deliveries queued again" in client.get(r.headers["Location"]).get_data(
        as_text=True
    )
    r = client.post("/deliveries/retry", data={"pixel": PIXEL, "since": "2020-01-01T00:00"})
    assert "2 failed deliveries queued again" in client.get(r.headers["Location"]).get_data(
        as_text=True
    )
    deliver()
    assert {d.status for d in db.session.scalars(select(Delivery))} == {"delivered"}
    assert len(fake_x.accepted()) == 2
    app.config["WTF_CSRF_ENABLED"] = True
    assert client.post("/deliveries/retry", data={"pixel": PIXEL}).status_code == 400


def test_event_debugger_refreshes_itself_and_keeps_its_filters(client, ctx):
    site = factories.site()
    login(client)
    page = client.get(f"/events?site_id={site.id}&event_name=Signup").get_data(as_text=True)
    live = re.search(r'<div id="events-live" hx-get="([^"]+)" hx-trigger="every 3s"', page)
    assert live and html.unescape(live.group(1)) == f"/events?site_id={site.id}&event_name=Signup"


def test_edit_and_delete_a_pixel(x_app, client, ctx, fake_x):
    from xtag.models import Pixel

    site, mapping = _shop_with_mapping(client, fake_x)
    pixel = db.session.get(Pixel, mapping.pixel_key)
    login(client)
    page = client.get(f"/sites/{site.id}/mappings").get_data(as_text=True)
    assert f"/pixels/{pixel.id}?site_id={site.id}" in page
    edit = f"/pixels/{pixel.id}?site_id={site.id}"
    assert "1 mapping (on every site)" in client.get(edit).get_data(as_text=True)
    bad = client.post(edit, data={"pixel_id": "NOT base36!", "connection_id": pixel.connection_id})
    assert bad.status_code == 200 and "base-36" in bad.get_data(as_text=True)
    data = {"pixel_id": PIXEL, "name": "Renamed", "connection_id": pixel.connection_id}
    r = client.post(edit, data=data)
    assert r.status_code == 302 and r.headers["Location"] == f"/sites/{site.id}/mappings"
    db.session.expire_all()
    assert pixel.name == "Renamed"
    r = client.post(f"/pixels/{pixel.id}/delete", data={"site_id": site.id})
    assert r.status_code == 302
    db.session.expire_all()
    assert db.session.scalar(select(func.count(Pixel.id))) == 0
    assert db.session.scalar(select(func.count(Mapping.id))) == 0

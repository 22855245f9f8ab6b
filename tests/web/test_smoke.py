from tests.support import factories


def test_track_is_queued_and_recorded(client, ctx, work):
    from xtag.extensions import db
    from xtag.models import ReceivedEvent

    site = factories.site()
    r = client.post(
        "/v1/track", json={"writeKey": site.write_key, "event": "Signup", "anonymousId": "a"}
    )
    assert r.status_code == 200, r.json
    work()
    rows = db.session.query(ReceivedEvent).all()
    assert [(e.event_name, e.outcome) for e in rows] == [("Signup", "unmapped")]

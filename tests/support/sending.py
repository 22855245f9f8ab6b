"""Sending events as sites do: Segment messages, a write key as HTTP Basic,
batches to the collector; and what waits in the inbox."""

from __future__ import annotations

import base64

from xtag.pipeline import inbox, queues


def basic(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def order(n: int, **extra) -> dict:
    message = {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": f"anon-{n}",
        "messageId": f"msg-{n}",
        "properties": {"order_id": f"order-{n}", "revenue": 20, "currency": "eur"},
        "context": {"twclid": f"tw-{n}"},
    }
    message.update(extra)
    return message


def track(**extra) -> dict:
    message = {"event": "Order Completed", "anonymousId": "anon-1", "properties": {"revenue": 20}}
    message.update(extra)
    return message


def send(client, site, messages) -> None:
    for start in range(0, len(messages), 100):
        r = client.post(
            "/v1/batch",
            json={"batch": messages[start : start + 100]},
            headers=basic(site.write_key),
        )
        assert r.status_code == 200, r.json


def queued() -> int:
    return inbox.depth(queues.redis_client())

"""RQ entry points, and nothing else. Their names and signatures are a
contract with jobs already queued: add keyword arguments with defaults only."""

from __future__ import annotations

from xtag.pipeline import alerts, batching, replaying, sending


def deliver_pixel(pixel_key: int) -> int:
    """Send the conversions waiting for one pixel, in batches of 500."""
    return batching.deliver_pixel(pixel_key)


def retry_delivery(delivery_id: int) -> str:
    """Send a delivery's outstanding conversions again."""
    return sending.send(delivery_id)


def run_replay(replay_id: int) -> str:
    """Run a queued replay of received events through today's mappings."""
    return replaying.run_queued(replay_id)


def notify_alert(alert_id: int, ended: bool = False) -> str:
    """Post an alert's start (or end) to the webhook; fails, so RQ retries, when it is down."""
    return alerts.notify(alert_id, ended)

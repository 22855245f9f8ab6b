"""Prometheus metrics. Counters and histograms are kept by every process
(gunicorn's and the workers'); with PROMETHEUS_MULTIPROC_DIR set, as `make
run` does and production should, the processes add up in one scrape. Queue
gauges are read from Redis and the database when scraped."""

from __future__ import annotations

import os

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from xtag import stats

EVENTS_RECEIVED = Counter(
    "xtag_events_received_total", "Events the collector accepted (answered 200).", ["site"]
)
EVENTS_FORWARDED = Counter(
    "xtag_events_forwarded_total", "Recorded events that became conversions.", ["site"]
)
EVENTS_DROPPED = Counter(
    "xtag_events_dropped_total",
    "Recorded events not forwarded, by reason (unmapped, consent, duplicate, ...).",
    ["site", "reason"],
)
COLLECTOR_REFUSED = Counter(
    "xtag_collector_refused_total", "Collector requests answered 4xx or 503.", ["status"]
)
CONVERSIONS_DELIVERED = Counter(
    "xtag_conversions_delivered_total", "Conversions X accepted.", ["pixel_id"]
)
CONVERSIONS_FAILED = Counter(
    "xtag_conversions_failed_total",
    "Conversions that will not reach X without a retry by hand: rejected by X's "
    "validation, refused (401/403/404), or out of retries.",
    ["pixel_id", "reason"],
)
X_REQUESTS = Counter(
    "xtag_x_requests_total", "Requests to X's conversions API, by status class.", ["status"]
)
X_REQUEST_SECONDS = Histogram(
    "xtag_x_request_duration_seconds",
    "Time for one request to X's conversions API.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES_SCHEDULED = Counter("xtag_retries_scheduled_total", "Delivery retries scheduled.")


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "error"


GAUGES = {
    "inbox_depth": "Accepted requests not yet recorded.",
    "inbox_oldest_age_seconds": "Age of the oldest unrecorded request.",
    "inbox_dead_entries": "Requests set aside because they could not be recorded.",
    "workers_alive": "Workers that reported within XTAG_READY_WORKER_SECONDS.",
    "conversions_waiting": "Conversions not yet taken into a delivery.",
    "conversions_waiting_oldest_age_seconds": "Age of the oldest waiting conversion.",
}


class QueueCollector:
    """What is waiting, read at scrape time by the process that answers."""

    def __init__(self, client: redis.Redis, session, within: float):
        self.client, self.session, self.within = client, session, within

    def collect(self):
        values = dict(stats.queues(self.client, self.within) or {})
        try:
            values.update(stats.waiting(self.session))
        except SQLAlchemyError:
            pass
        finally:
            self.session.remove()
        for name, value in values.items():
            yield GaugeMetricFamily(f"xtag_{name}", GAUGES[name], value=value)


def exposition(client: redis.Redis, session, within: float) -> bytes:
    """The text format for one scrape: every process's counters, and the queues."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
        text = generate_latest(processes)
    else:
        text = generate_latest(REGISTRY)
    queues = CollectorRegistry(auto_describe=False)
    queues.register(QueueCollector(client, session, within))
    return text + generate_latest(queues)

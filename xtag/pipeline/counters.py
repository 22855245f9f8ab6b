"""Prometheus counters: what happened, counted by every process that saw it
(the collector's and the workers'); with PROMETHEUS_MULTIPROC_DIR set, as
`make run` does and production should, the processes add up in one scrape.
What is waiting now is read at scrape time (xtag.services.monitoring)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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

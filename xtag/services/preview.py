"""What a message would become: the collector's and the worker's own rules
run on it without Redis, database writes or X, optionally with a mapping
as it is being typed."""

from __future__ import annotations

from typing import Any

from xtag.core import mapping
from xtag.core.errors import Invalid
from xtag.core.events import prepare
from xtag.core.fields import Field, Schema
from xtag.core.messages import Rejected, RequestFacts, validate
from xtag.extensions import db
from xtag.models import Mapping, Pixel, Site, utcnow
from xtag.pipeline.intake import rule, rules_for
from xtag.services.resources import MAPPINGS
from xtag.services.writekeys import site_rules

PREVIEW = Schema(
    "PreviewRequest",
    (
        Field("site_id", "integer", "the site whose mappings apply", required=True),
        Field("message", "object", "a Segment message, as a site would send it", required=True),
    ),
)


def draft(data: dict, editing: Mapping | None = None) -> Mapping:
    """A mapping as typed in a form, checked exactly as on saving, not saved."""
    values = MAPPINGS.prepare(MAPPINGS.schema.clean(data, partial=editing is not None), editing)
    kept = ("site_id", "event_name", "description", "fields")
    base = {c: getattr(editing, c) for c in kept} if editing else {}
    return Mapping(**{**base, **values, "enabled": True})


def preview(
    site: Site, message: Any, drafted: Mapping | None = None, editing: Mapping | None = None
) -> dict:
    """What a message would become for this site: the exact conversions per
    pixel, or why it would be dropped. With a draft mapping, as if it were
    saved (in place of the one being edited)."""
    if not isinstance(message, dict):
        raise Invalid("message must be a JSON object", "message")
    try:
        kind = validate(message, "message.", "track" if "type" not in message else "batch")
    except Rejected as exc:
        raise Invalid(str(exc), "message") from None
    facts = RequestFacts(None, None, None, False, utcnow())
    event = prepare(message, kind, site_rules(site), facts)
    name = event["message"]["event"]
    rules = rules_for({site.id}).get((site.id, name), [])
    if editing is not None and editing.enabled:
        rules = [r for r in rules if r != rule(editing, editing.pixel.pixel_id)]
    if drafted is not None and drafted.event_name == name:
        rules = [*rules, rule(drafted, db.session.get(Pixel, drafted.pixel_key).pixel_id)]
    outcome, reason, result = mapping.outcome(event, False, rules)
    if outcome == "waiting":  # no later event of this visitor can complete a preview
        outcome, result = "dropped", None
    conversions = [
        {"pixel": rule.pixel_key, "pixel_id": rule.pixel_id, "conversion": conversion}
        for rule, conversion in (result.conversions if result else [])
    ]
    return {"event_name": name, "outcome": outcome, "reason": reason, "conversions": conversions}

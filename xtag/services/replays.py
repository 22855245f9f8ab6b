"""Starting a replay (admins): checked, audited, then counted at once (a dry
run) or queued for a worker; and how a replay is shown."""

from __future__ import annotations

from xtag.core.errors import BadReference, Invalid
from xtag.core.fields import Field, Schema
from xtag.core.times import parse_filter
from xtag.extensions import db
from xtag.models import Replay, Site, User, utcnow
from xtag.pipeline import queues, replaying
from xtag.services.changes import audit

JOB = "xtag.pipeline.jobs.run_replay"

REQUEST = Schema(
    "ReplayRequest",
    (
        Field("site_id", "integer", "the site whose received events are run again", required=True),
        Field("since", "string", "start of the window (ISO 8601), inclusive", required=True),
        Field("until", "string", "end of the window (ISO 8601), exclusive", required=True),
        Field("event_name", "string", "only events of this name", nullable=True, max_length=200),
        Field("dry_run", "boolean", "only count what it would send"),
    ),
    has_id=False,
)

REPLAY = Schema(
    "Replay",
    (
        Field("site_id", "integer"),
        Field("since", "string"),
        Field("until", "string"),
        Field("event_name", "string", nullable=True),
        Field("dry_run", "boolean"),
        Field("status", "string", "queued, running, done or failed"),
        Field("events", "integer", "received events read so far"),
        Field("total", "integer", "received events in the window", nullable=True),
        Field("conversions", "object", "conversions made (dry run: would make), per X pixel id"),
        Field("skipped", "integer", "conversions xtag already has (same pixel, conversion id)"),
        Field("older_than_48h", "integer", "of those, how many are older than X's dedup window"),
        Field("warning", "string", nullable=True),
        Field("error", "string", nullable=True),
        Field("created_at", "string"),
        Field("finished_at", "string", nullable=True),
    ),
)


def start(actor: User | None, data: dict) -> Replay:
    """A replay of a site's window: counted now when a dry run, else queued."""
    values = REQUEST.clean(data)
    site = db.session.get(Site, values["site_id"])
    if site is None:
        raise BadReference(f"no site with id {values['site_id']}", "site_id")
    since = parse_filter(values["since"], "since")
    until = parse_filter(values["until"], "until")
    if since is None or until is None:
        raise Invalid("since and until are required times", "since" if since is None else "until")
    if until <= since:
        raise Invalid("until must be after since", "until")
    if since > utcnow():
        raise Invalid("since is in the future: there is nothing to replay", "since")
    replay = Replay(
        site_id=site.id,
        user_id=actor.id if actor else None,
        since=since,
        until=until,
        event_name=(values.get("event_name") or "").strip() or None,
        dry_run=bool(values.get("dry_run")),
        status="queued",
        events=0,
        skipped=0,
        older_than_48h=0,
        conversions={},
    )
    db.session.add(replay)
    db.session.flush()
    shown = {k: data[k] for k in ("since", "until", "event_name", "dry_run") if k in data}
    audit(actor, "replay", "site", site.id, {"replay": replay.id, **shown})
    db.session.commit()
    if replay.dry_run:
        return replaying.run(replay)
    queues.enqueue(JOB, None, replay_id=replay.id)
    return replay

"""Management API routes on what happened after "sent": a pixel's match
quality and replays of received events."""

from __future__ import annotations

from flask import g, jsonify, url_for
from sqlalchemy import select

from xtag.api import openapi
from xtag.api.auth import requires
from xtag.api.views import bp, found, int_arg, json_body, paged, row_of
from xtag.models import Replay
from xtag.pipeline import quality
from xtag.services import replays
from xtag.services.resources import PIXELS

DAYS_MAX = 90


@bp.route("/pixels/<int:row_id>/quality", methods=["GET"])
@requires("marketer")
def pixel_quality(row_id: int):
    """What the pixel's conversions carried for X to match on, over ?days= (7)."""
    pixel = row_of(PIXELS, row_id)
    days = int_arg("days", 7, 1, DAYS_MAX)
    per_day = quality.daily(pixel, days)
    window = quality.total(per_day)
    return jsonify(
        days=days,
        pixel_id=pixel.pixel_id,
        **window.as_json(),
        per_day=[day.as_json() for day in per_day],
        advice=quality.advice(window),
    )


def _replay(row_id: int) -> Replay:
    return found(Replay, row_id, "replay")


@bp.route("/replays", methods=["POST"])
@requires("admin")
def replay_start():
    """Run a window of received events through today's mappings (or count, dry_run)."""
    replay = replays.start(g.api_user, json_body())
    response = jsonify(replays.REPLAY.dump(replay))
    response.headers["Location"] = url_for("api.replay_read", row_id=replay.id)
    return response, 201


@bp.route("/replays", methods=["GET"])
@requires("marketer")
def replay_list():
    return paged(select(Replay), replays.REPLAY.dump, Replay.id.desc())


@bp.route("/replays/<int:row_id>", methods=["GET"])
@requires("marketer")
def replay_read(row_id: int):
    """A replay's progress: events read of the window's total, conversions made."""
    return jsonify(replays.REPLAY.dump(_replay(row_id)))


_QUALITY = {
    "type": "object",
    "properties": {
        "days": {"type": "integer"},
        "conversions": {"type": "integer"},
        "with": {
            "type": "object",
            "properties": {
                k: {"type": "integer"} for k in ("twclid", "hashed_email", "hashed_phone_number")
            },
        },
        "weak_only": {"type": "integer"},
        "dropped_no_identifier": {"type": "integer"},
        "score": {"type": ["number", "null"]},
        "per_day": {"type": "array", "items": {"type": "object"}},
        "advice": {"type": "array", "items": {"type": "string"}},
    },
}
openapi.declare(
    "/api/v1/pixels/{row_id}/quality",
    {
        "parameters": [openapi.ROW_ID],
        "get": {
            "summary": "Match quality of a pixel's conversions over ?days= (1-90, default 7)",
            "parameters": [
                {"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1}}
            ],
            "responses": {
                "200": {"description": "counts over the window", **openapi.json_content(_QUALITY)},
                **openapi.errors(400, 401, 404),
            },
        },
    },
)
openapi.declare(
    "/api/v1/replays",
    {
        "post": {
            "summary": "Replay received events of a window through today's mappings (admin)",
            "requestBody": {
                "required": True,
                **openapi.json_content(replays.REQUEST.openapi_input()),
            },
            "responses": {
                "201": {
                    "description": "counted (dry run) or queued",
                    **openapi.json_content(replays.REPLAY.openapi_output()),
                },
                **openapi.errors(400, 401, 403, 422),
            },
        },
        "get": {
            "summary": "Replays, newest first",
            "parameters": openapi.PAGING,
            "responses": {
                "200": {"description": "a page", **openapi.json_content({"type": "object"})},
                **openapi.errors(400, 401),
            },
        },
    },
)
openapi.declare(
    "/api/v1/replays/{row_id}",
    {
        "parameters": [openapi.ROW_ID],
        "get": {
            "summary": "A replay's progress",
            "responses": {
                "200": {
                    "description": "found",
                    **openapi.json_content(replays.REPLAY.openapi_output()),
                },
                **openapi.errors(401, 404),
            },
        },
    },
)

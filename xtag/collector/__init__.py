"""The first-party collector: Segment's HTTP Tracking API, spoken natively."""

from flask import Blueprint

bp = Blueprint("collector", __name__)

from xtag.collector import views  # noqa: E402,F401

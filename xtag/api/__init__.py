"""The management API: JSON under /api/v1/, bearer tokens, an OpenAPI document."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from xtag.api import views  # noqa: E402,F401

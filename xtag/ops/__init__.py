"""Operator endpoints: health and readiness."""

from flask import Blueprint

bp = Blueprint("ops", __name__)

from xtag.ops import views  # noqa: E402,F401

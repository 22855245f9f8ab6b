"""The browser admin: login and the pages marketers and admins use."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from xtag.admin import connect, mapping_pages, pages, people, views  # noqa: E402,F401

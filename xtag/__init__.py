"""xtag: a server-side tag manager for the X Ads Conversions API.

The app factory: configuration, extensions, the web edges (collector, admin,
api, ops), error pages and commands, each registered by a helper below."""

from __future__ import annotations

import os

from flask import Flask, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface, SessionInterface
from sqlalchemy import event
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from xtag import config, logs
from xtag.extensions import csrf, db, login_manager, migrate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON_PREFIXES = ("/v1/", "/api/")


def create_app(overrides: dict | None = None, environ=None) -> Flask:
    app = Flask(
        __name__,
        instance_path=os.path.join(ROOT, "instance"),
        template_folder=os.path.join(ROOT, "templates"),
        static_folder=os.path.join(ROOT, "static"),
    )
    app.config.update(
        config.from_env(os.environ if environ is None else environ, app.instance_path)
    )
    app.config.update(overrides or {})
    app.session_interface = Sessions()
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    app.after_request(security_headers)
    from xtag.collector import PREFIXES, Collector

    collector = Collector(create_collector_app(app))
    app.wsgi_app = logs.RequestLog(ByPath(app.wsgi_app, PREFIXES, collector))
    if not app.testing:  # tests keep pytest's log capture
        logs.configure(app.config["XTAG_LOG_FORMAT"])
    if app.config["XTAG_TRUSTED_PROXIES"]:
        hops = app.config["XTAG_TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    return app


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def security_headers(response):
    """Strict headers on the admin and API (no inline script anywhere)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class Sessions(SecureCookieSessionInterface):
    """Signed-cookie sessions whose cookie is Secure whenever the request came
    over https (directly, or through a trusted proxy)."""

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


class NoSessions(SessionInterface):
    """The collector has no logged-in users: no session cookie to read or write."""

    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        return None


class ByPath:
    """Send the paths that start with any of `prefixes` to another WSGI app."""

    def __init__(self, default, prefixes: tuple[str, ...], other):
        self.default, self.prefixes, self.other = default, prefixes, other

    def __call__(self, environ, start_response):
        target = (
            self.other if environ.get("PATH_INFO", "").startswith(self.prefixes) else self.default
        )
        return target(environ, start_response)


def create_collector_app(app: Flask) -> Flask:
    """The collector's lean Flask app, sharing the main app's config and
    database engine: no session, login or CSRF. Its routes that take events
    are served in front of it by a plain WSGI callable (xtag.collector.Collector)."""
    from xtag.collector import bp, views

    lean = Flask("xtag.collector", instance_path=app.instance_path)
    lean.config = app.config
    lean.session_interface = NoSessions()
    with app.app_context():
        lean.extensions["xtag_engine"] = db.engine
    lean.register_blueprint(bp)
    for code in (400, 404, 405, 413, 415, 429, 500):
        lean.register_error_handler(code, views.http_error)
    return lean


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":  # as on PostgreSQL: deletes cascade
            event.listen(db.engine, "connect", _sqlite_foreign_keys)
    migrate.init_app(app, db, directory=os.path.join(ROOT, "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    csrf.init_app(app)


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def register_blueprints(app: Flask) -> None:
    from xtag.admin import bp as admin
    from xtag.api import bp as api
    from xtag.ops import bp as ops

    csrf.exempt(api)
    app.register_blueprint(api)
    app.register_blueprint(ops)
    app.register_blueprint(admin)


def register_errorhandlers(app: Flask) -> None:
    def handle(error: HTTPException):
        if request.path.startswith("/api/"):
            code = error.name.lower().replace(" ", "_")
            response = jsonify(error={"code": code, "message": error.description or error.name})
            response.status_code = error.code
            return response
        if request.path.startswith(JSON_PREFIXES):
            response = jsonify(error=error.description or error.name)
            response.status_code = error.code
            return response
        return render_template("error.html", error=error), error.code

    for code in (400, 403, 404, 405, 413, 415, 429, 500):
        app.register_error_handler(code, handle)


def register_commands(app: Flask) -> None:
    from xtag.cli import xtag_cli

    app.cli.add_command(xtag_cli)

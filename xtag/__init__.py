"""xtag: a server-side tag manager for the X Ads Conversions API."""

from __future__ import annotations

import os

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from xtag import config
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
    if app.config["XTAG_TRUSTED_PROXIES"]:
        hops = app.config["XTAG_TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(ROOT, "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "admin.login"
    csrf.init_app(app)


def register_blueprints(app: Flask) -> None:
    from xtag import admin, collector, ops

    csrf.exempt(collector.bp)
    app.register_blueprint(collector.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)


def register_errorhandlers(app: Flask) -> None:
    def handle(error: HTTPException):
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

"""`flask --app app xtag ...`: operator commands."""

from __future__ import annotations

import os
import secrets

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from xtag.extensions import db
from xtag.models import ROLES, ApiToken, User

xtag_cli = AppGroup("xtag", help="xtag operator commands.")


def _user(email: str) -> User:
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user with email {email}")
    return user


@xtag_cli.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password", help="prompted for when not given")
def create_user(email: str, role: str, password: str | None) -> None:
    """Create a user who can log in to the admin."""
    email = email.strip().lower()
    if "@" not in email:
        raise click.BadParameter("must be an email address", param_hint="EMAIL")
    if db.session.scalar(select(User).where(User.email == email)):
        raise click.ClickException(f"a user with email {email} already exists")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.BadParameter("must be at least 8 characters", param_hint="--password")
    user = User(email=email, role=role, active=True)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"created {role} {email}")


@xtag_cli.command("create-api-token")
@click.argument("email")
@click.option("--name", default="", help="a label to recognise the token by")
def create_api_token(email: str, name: str) -> None:
    """Print a new management-API token for a user (only its hash is stored)."""
    row, token = ApiToken.issue(_user(email), name=name)
    db.session.add(row)
    db.session.commit()
    click.echo(token)


@xtag_cli.command("ensure-admin")
def ensure_admin() -> None:
    """Make sure an admin exists; a generated password is printed once."""
    if db.session.scalar(select(User).where(User.role == "admin", User.active.is_(True))):
        click.echo("admin user: already set up (log in with the password you were given)")
        return
    email = (os.environ.get("XTAG_ADMIN_EMAIL") or "admin@localhost").strip().lower()
    password = os.environ.get("XTAG_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    user = db.session.scalar(select(User).where(User.email == email)) or User(email=email)
    user.role, user.active = "admin", True
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    shown = password if not os.environ.get("XTAG_ADMIN_PASSWORD") else "(from XTAG_ADMIN_PASSWORD)"
    click.echo(f"admin user: {email}  password: {shown}  (shown once; keep it)")


@xtag_cli.command("worker")
@click.option("--burst", is_flag=True, help="process everything that is due, then exit")
def worker(burst: bool) -> None:
    """Run an RQ worker (with the scheduler) for every xtag queue."""
    from xtag import worker as worker_mod

    worker_mod.run(current_app._get_current_object(), burst=burst)

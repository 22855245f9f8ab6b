"""Operator commands."""

from sqlalchemy import select

from tests import factories
from xtag.extensions import db
from xtag.models import ApiToken, User


def test_create_user_with_role_and_password(runner, ctx):
    result = runner.invoke(
        args=[
            "xtag",
            "create-user",
            "Ann@Example.com",
            "--role",
            "admin",
            "--password",
            "long enough",
        ]
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User))
    assert (user.email, user.role, user.active) == ("ann@example.com", "admin", True)
    assert user.check_password("long enough")


def test_create_user_prompts_for_the_password(runner, ctx):
    result = runner.invoke(
        args=["xtag", "create-user", "m@example.com", "--role", "marketer"],
        input="secret pw\nsecret pw\n",
    )
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(User)).check_password("secret pw")


def test_create_user_refuses_bad_input(runner, ctx):
    factories.user("dup@example.com")
    cases = [
        (["dup@example.com", "--role", "admin", "--password", "long enough"], "already exists"),
        (["not-an-email", "--role", "admin", "--password", "long enough"], "email"),
        (["x@example.com", "--role", "boss", "--password", "long enough"], "boss"),
        (["x@example.com", "--role", "admin", "--password", "short"], "8 characters"),
    ]
    for args, says in cases:
        result = runner.invoke(args=["xtag", "create-user", *args])
        assert result.exit_code != 0 and says in result.output, result.output


def test_create_api_token_prints_a_token_that_works(runner, ctx):
    factories.user("ops@example.com")
    result = runner.invoke(args=["xtag", "create-api-token", "ops@example.com"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("xtag_") and ApiToken.find(token).user.email == "ops@example.com"
    missing = runner.invoke(args=["xtag", "create-api-token", "nobody@example.com"])
    assert missing.exit_code != 0 and "no user" in missing.output


def test_ensure_admin_creates_once_from_environment(runner, ctx, monkeypatch):
    monkeypatch.setenv("XTAG_ADMIN_EMAIL", "Boss@Example.com")
    monkeypatch.setenv("XTAG_ADMIN_PASSWORD", "from the env")
    first = runner.invoke(args=["xtag", "ensure-admin"])
    assert "boss@example.com" in first.output and "from the env" not in first.output
    second = runner.invoke(args=["xtag", "ensure-admin"])
    assert "already" in second.output
    [admin] = db.session.scalars(select(User)).all()
    assert admin.role == "admin" and admin.check_password("from the env")


def test_ensure_admin_generates_and_prints_a_password(runner, ctx, monkeypatch):
    monkeypatch.delenv("XTAG_ADMIN_EMAIL", raising=False)
    monkeypatch.delenv("XTAG_ADMIN_PASSWORD", raising=False)
    result = runner.invoke(args=["xtag", "ensure-admin"])
    password = result.output.split("password: ")[1].split()[0]
    assert db.session.scalar(select(User)).check_password(password)

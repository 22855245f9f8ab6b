"""Operator commands."""

from sqlalchemy import select

from tests.support import factories
from tests.support.sending import basic, order
from tests.support.shop import setup_shop
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
            "long enough, yes",
        ]
    )
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User))
    assert (user.email, user.role, user.active) == ("ann@example.com", "admin", True)
    assert user.check_password("long enough, yes")


def test_create_user_prompts_for_the_password(runner, ctx):
    result = runner.invoke(
        args=["xtag", "create-user", "m@example.com", "--role", "marketer"],
        input="secret passphrase\nsecret passphrase\n",
    )
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(User)).check_password("secret passphrase")


def test_create_user_refuses_bad_input(runner, ctx):
    factories.user("dup@example.com")
    cases = [
        (
            ["dup@example.com", "--role", "admin", "--password", "long enough, yes"],
            "already exists",
        ),
        (["not-an-email", "--role", "admin", "--password", "long enough, yes"], "email"),
        (["x@example.com", "--role", "boss", "--password", "long enough, yes"], "boss"),
        (["x@example.com", "--role", "admin", "--password", "short"], "12 characters"),
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
    monkeypatch.setenv("XTAG_ADMIN_PASSWORD", "from the environment")
    first = runner.invoke(args=["xtag", "ensure-admin"])
    assert "boss@example.com" in first.output and "from the environment" not in first.output
    second = runner.invoke(args=["xtag", "ensure-admin"])
    assert "already" in second.output
    [admin] = db.session.scalars(select(User)).all()
    assert admin.role == "admin" and admin.check_password("from the environment")


def test_ensure_admin_generates_and_prints_a_password(runner, ctx, monkeypatch):
    monkeypatch.delenv("XTAG_ADMIN_EMAIL", raising=False)
    monkeypatch.delenv("XTAG_ADMIN_PASSWORD", raising=False)
    result = runner.invoke(args=["xtag", "ensure-admin"])
    password = result.output.split("password: ")[1].split()[0]
    assert db.session.scalar(select(User)).check_password(password)


def test_revoke_api_token_by_prefix(runner, ctx):
    factories.user("ops@example.com")
    token = runner.invoke(args=["xtag", "create-api-token", "ops@example.com"]).output.strip()
    assert runner.invoke(args=["xtag", "revoke-api-token", token[:8]]).exit_code != 0
    result = runner.invoke(args=["xtag", "revoke-api-token", token[:12]])
    assert result.exit_code == 0 and "revoked 1" in result.output
    assert ApiToken.find(token) is None
    assert runner.invoke(args=["xtag", "revoke-api-token", token[:12]]).exit_code != 0


def test_rotate_keys_then_old_key_removed_credentials_still_deliver(
    x_app, client, runner, ctx, fake_x, deliver
):
    from cryptography.fernet import Fernet

    site = setup_shop(fake_x)
    old = x_app.config["XTAG_ENCRYPTION_KEYS"]
    x_app.config["XTAG_ENCRYPTION_KEYS"] = [Fernet.generate_key().decode(), *old]
    try:
        result = runner.invoke(args=["xtag", "rotate-keys"])
        assert result.exit_code == 0 and "re-encrypted 1" in result.output
        x_app.config["XTAG_ENCRYPTION_KEYS"] = x_app.config["XTAG_ENCRYPTION_KEYS"][:1]
        client.post("/v1/track", json=order(1), headers=basic(site.write_key))
        deliver()
        assert [r.status for r in fake_x.calls()] == [200]
    finally:
        x_app.config["XTAG_ENCRYPTION_KEYS"] = old


def test_retry_failed_purge_and_status(x_app, client, runner, ctx, fake_x, deliver):

    site = setup_shop(fake_x)
    fake_x.fail_next(404)
    client.post("/v1/track", json=order(1), headers=basic(site.write_key))
    deliver()
    status = runner.invoke(args=["xtag", "status"]).output
    assert "failed deliveries: 1" in status and "unhealthy connection" in status
    assert "workers alive: 0" in status
    assert runner.invoke(args=["xtag", "retry-failed", "--since", "never"]).exit_code != 0
    result = runner.invoke(
        args=["xtag", "retry-failed", "--pixel", "o8z6j", "--since", "2000-01-01T00:00:00Z"]
    )
    assert "queued 1" in result.output
    deliver()
    assert "failed deliveries: 0" in runner.invoke(args=["xtag", "status"]).output
    assert len(fake_x.accepted()) == 1
    assert "events: 0 row(s)" in runner.invoke(args=["xtag", "purge"]).output


def test_send_test_event_goes_through_the_collector(runner, ctx, work):
    from xtag.models import ReceivedEvent

    site = factories.site()
    result = runner.invoke(args=["xtag", "send-test-event", str(site.id), "Test Order"])
    assert result.exit_code == 0 and result.output.startswith("200 ")
    work()
    db.session.expire_all()
    [event] = db.session.scalars(select(ReceivedEvent)).all()
    assert event.event_name == "Test Order" and event.identifiers["twclid"].startswith("xtag-test-")
    assert runner.invoke(args=["xtag", "send-test-event", "999", "X"]).exit_code != 0


def test_users_and_tokens_made_by_the_cli_are_audited(runner, ctx):
    from xtag.models import AuditEntry

    runner.invoke(
        args=[
            "xtag",
            "create-user",
            "a@example.com",
            "--role",
            "admin",
            "--password",
            "long enough, yes",
        ]
    )
    token = runner.invoke(args=["xtag", "create-api-token", "a@example.com"]).output.strip()
    runner.invoke(args=["xtag", "revoke-api-token", token[:12]])
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.object_type) for e in entries] == [
        ("create", "user"),
        ("create", "api_token"),
        ("revoke", "api_token"),
    ]
    assert entries[0].changes["password_hash"] == "changed" and token not in repr(
        [e.changes for e in entries]
    )


def test_a_too_short_admin_password_from_the_environment_stops_start_up(runner, ctx, monkeypatch):
    monkeypatch.setenv("XTAG_ADMIN_PASSWORD", "short")
    result = runner.invoke(args=["xtag", "ensure-admin"])
    assert result.exit_code != 0
    assert "XTAG_ADMIN_PASSWORD: password must be at least 12 characters" in result.output
    assert db.session.scalars(select(User)).all() == []

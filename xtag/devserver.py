"""`make run`: the whole product on one machine, in the foreground.

Starts the embedded Redis (unless REDIS_URL is set), applies migrations,
makes sure an admin exists, then runs gunicorn and one worker. Ctrl-C stops
everything this started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from xtag import embedded

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _flask(*args: str) -> list[str]:
    return [str(BIN / "flask"), "--app", "app", *args]


def main() -> int:
    port = os.environ.get("PORT", "5000")
    os.umask(0o077)  # what this starts writes under instance/ is the owner's alone
    embedded.private(ROOT / "instance")
    os.environ.setdefault("XTAG_LOG_FORMAT", "text")  # a terminal: logs for humans
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics adds up every process
        metrics_dir = ROOT / "instance" / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    children: list[subprocess.Popen] = []
    redis_proc = None
    if not os.environ.get("REDIS_URL"):
        redis_proc = embedded.start(str(ROOT / "instance"), daemonize=False)
    try:
        subprocess.run(_flask("db", "upgrade"), cwd=ROOT, check=True)
        subprocess.run(_flask("xtag", "ensure-admin"), cwd=ROOT, check=True)
        children.append(subprocess.Popen(_flask("xtag", "worker"), cwd=ROOT))
        children.append(
            subprocess.Popen(
                [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}", "app:app"],
                cwd=ROOT,
            )
        )
        time.sleep(1.5)
        print(
            f"\n  xtag is running.\n"
            f"  Admin:     http://127.0.0.1:{port}/login  (the admin user and password are above)\n"
            f"  Collector: http://127.0.0.1:{port}/v1/track  (Segment HTTP API)\n"
            f"  Ctrl-C stops the web app, the worker and the embedded Redis.\n",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        return 1
    except (KeyboardInterrupt, SystemExit):
        return 0
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

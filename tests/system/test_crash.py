"""At least once, never lost: real worker processes killed with SIGKILL
mid-delivery, and everything still reaches the fake X."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from tests.support import factories
from tests.support.sending import basic, order
from tests.support.shop import EVENT, PIXEL
from tests.support.workers import ROOT, kill, log_tail, start_worker
from xtag.extensions import db
from xtag.models import Connection, Delivery, Mapping, Pixel


def test_worker_killed_mid_delivery_loses_nothing(app, client, ctx, environ, fake_x, tmp_path):
    site = factories.site()
    connection = Connection(name="X", auth_type="pixel_token")
    connection.credentials = {"token": fake_x.pixel_token}
    pixel = Pixel(pixel_id=PIXEL, connection=connection)
    db.session.add_all(
        [
            connection,
            pixel,
            Mapping(site=site, event_name="Order Completed", pixel=pixel, x_event_id=EVENT),
        ]
    )
    db.session.commit()
    total = 2000
    for start in range(0, total, 250):
        batch = [order(n) for n in range(start, start + 250)]
        assert (
            client.post(
                "/v1/batch", json={"batch": batch}, headers=basic(site.write_key)
            ).status_code
            == 200
        )
    expected = {f"order-{n}" for n in range(total)}

    # Each kill lands while a request is in flight; X then fails that request,
    # so only a worker that picks up the dead one's delivery gets it through.
    fake_x.hang_next(1.5, n=3)
    fake_x.fail_next(503, n=3)
    for _ in range(3):
        worker = start_worker(environ, fake_x, tmp_path / "worker.log")
        seen = len(fake_x.requests)
        assert fake_x.wait_for(lambda seen=seen: len(fake_x.requests) > seen, timeout=30)
        kill(worker)

    worker = start_worker(environ, fake_x, tmp_path / "worker.log")
    try:
        delivered = fake_x.wait_for(
            lambda: {c["conversion_id"] for c in fake_x.accepted()} >= expected, timeout=90
        )
    finally:
        kill(worker)
    accepted = [c["conversion_id"] for c in fake_x.accepted()]
    assert delivered, (
        f"{len(expected - set(accepted))} conversions never reached X; worker log:\n"
        + log_tail(tmp_path / "worker.log")
    )
    assert set(accepted) == expected  # duplicates only ever repeat a conversion_id
    assert all(len(r.conversions) <= 500 for r in fake_x.calls())
    db.session.expire_all()
    statuses = {d.status for d in db.session.scalars(select(Delivery))}
    assert statuses <= {"delivered", "sending", "retrying"}


def test_readme_setup_script_runs_against_a_live_xtag(
    app, ctx, environ, fake_x, live_server, tmp_path
):
    """examples/setup.sh, as the README shows it: API and CLI only, then the
    delivery read back once a real worker sent it to (the fake) X."""
    from xtag.models import ApiToken

    admin = factories.user("admin@example.com", role="admin")
    row, token = ApiToken.issue(admin)
    db.session.add(row)
    db.session.commit()
    worker = start_worker(environ, fake_x, tmp_path / "worker.log")
    try:
        result = subprocess.run(
            [str(ROOT / "examples" / "setup.sh")],
            cwd=ROOT,
            env={
                **os.environ,
                **environ,
                "XTAG_URL": live_server,
                "XTAG_TOKEN": token,
                "PIXEL_TOKEN": fake_x.pixel_token,
                "FLASK": f"{sys.executable} -m flask",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        kill(worker)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"event_id": "o87ne"' in result.stdout.replace("'", '"')
    assert '"status": "delivered"' in result.stdout.replace("'", '"')
    [conversion] = fake_x.accepted()
    assert conversion["event_id"] == "o87ne" and conversion["identifiers"][0]["twclid"].startswith(
        "xtag-test-"
    )

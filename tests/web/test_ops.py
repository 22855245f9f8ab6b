"""Health and readiness, as a load balancer and an operator see them."""

import time

from xtag.pipeline import consuming, heartbeat, queues


def test_healthz_answers_while_the_process_is_up(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_needs_a_live_worker(app, client):
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json["checks"]["database"] == {"ok": True}
    assert r.json["checks"]["workers"] == {"ok": False, "alive": 0}
    with app.app_context():
        intake = consuming.Consumer(app, name="test-worker")
        intake.heartbeat()
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "ready"
    assert r.json["checks"]["workers"] == {"ok": True, "alive": 1}
    stale = {"old-worker": time.time() - heartbeat.TTL - 1}
    queues.redis_client(app).zadd(heartbeat.WORKERS, stale)
    assert client.get("/readyz").json["checks"]["workers"]["alive"] == 1  # the stale one is not


def test_readyz_reports_redis_down(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["checks"]["redis"]["ok"] is False
    assert r.json["checks"]["database"]["ok"] is True


def test_how_recent_a_heartbeat_readyz_needs_is_configurable(app, make_app):
    strict = make_app(XTAG_READY_WORKER_SECONDS="10")  # (the app fixture emptied Redis)
    queues.redis_client(strict).zadd(heartbeat.WORKERS, {"w": time.time() - 15})
    assert strict.test_client().get("/readyz").status_code == 503
    lenient = make_app(XTAG_READY_WORKER_SECONDS="60")
    assert lenient.test_client().get("/readyz").status_code == 200


def test_the_worker_schedule_runs_each_task_when_due(app):
    intake = consuming.Consumer(app, name="scheduled")
    intake.run_due()
    first = dict(intake._next_run)
    assert (
        set(first)
        == {task.name for task in consuming.SCHEDULE}
        == {
            "heartbeat",
            "sweep",
            "retention",
            "alerts",
        }
    )
    intake.run_due()  # nothing is due again yet
    assert intake._next_run == first
    assert heartbeat.alive(queues.redis_client(app)) == ["scheduled"]

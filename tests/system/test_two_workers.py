"""Two real worker processes on one database and one Redis, the inbox in two
shards: every conversion reaches X once (nothing crashed, so nothing is sent
twice), and a mapping changed while they run applies to the next events."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import update

from tests.support import factories
from tests.support.sending import basic, order
from tests.support.shop import setup_shop
from tests.support.workers import kill, log_tail, start_worker
from xtag.extensions import db
from xtag.models import Mapping
from xtag.pipeline import heartbeat, queues

SHARDS = "2"


def test_two_workers_send_every_conversion_once(app, ctx, environ, make_app, fake_x, tmp_path):
    shops = [setup_shop(fake_x), factories.site(name="Second shop")]
    factories.mapping(shops[1], "Order Completed")  # the same pixel, on the same connection
    collector = make_app(XTAG_INBOX_SHARDS=SHARDS).test_client()
    log = tmp_path / "worker.log"
    workers = [start_worker(environ, fake_x, log, XTAG_INBOX_SHARDS=SHARDS) for _ in range(2)]

    def send(first: int, count: int) -> set[str]:
        for start in range(first, first + count, 100):
            shop = shops[start // 100 % 2]
            batch = [order(n) for n in range(start, start + 100)]
            answer = collector.post(
                "/v1/batch", json={"batch": batch}, headers=basic(shop.write_key)
            )
            assert answer.status_code == 200
        return {f"order-{n}" for n in range(first, first + count)}

    def reached(expected: set[str]) -> bool:
        return {c["conversion_id"] for c in fake_x.accepted()} >= expected

    try:
        both = fake_x.wait_for(lambda: len(heartbeat.alive(queues.redis_client())) == 2, 30)
        assert both, log_tail(log)  # both read the inbox before the first event arrives
        expected = send(0, 3000)
        assert fake_x.wait_for(lambda: reached(expected), timeout=120), log_tail(log)
        db.session.execute(update(Mapping).values(x_event_id="o87nf"))  # while they run
        db.session.commit()
        later = send(3000, 200)
        assert fake_x.wait_for(lambda: reached(expected | later), timeout=60), log_tail(log)
    finally:
        for worker in workers:
            kill(worker)
    accepted = fake_x.accepted()
    twice = {cid: n for cid, n in Counter(c["conversion_id"] for c in accepted).items() if n > 1}
    assert not twice, f"{len(twice)} conversions reached X more than once"
    assert {c["event_id"] for c in accepted if c["conversion_id"] in later} == {"o87nf"}
    assert all(len(call.conversions) <= 500 for call in fake_x.calls())

"""Server SDKs as sites run them (segment-analytics-python, rudder-sdk-python,
and the Node SDKs when `node` is here), over real HTTP to the collector:
a server's address and an SDK's user agent never reach X as the visitor's,
`integrations` keep an event from X, and a batch with one bad message
delivers the others without the SDK reporting a failure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.support.shop import setup_shop
from xtag.core.identity import hash_email

EMAIL = "buyer@example.com"
CLIENTS = {"segment-analytics-python": SegmentClient, "rudder-sdk-python": RudderClient}


@pytest.fixture
def shop(x_app, live_server, ctx, fake_x):
    return setup_shop(fake_x)


@pytest.fixture(params=sorted(CLIENTS))
def sdk(request, shop, live_server):
    """A client of the SDK pointed at xtag; failures it reports are kept."""
    failures: list[Exception] = []
    client = CLIENTS[request.param](
        shop.write_key,
        host=live_server,
        sync_mode=True,
        max_retries=1,
        on_error=lambda error, _batch: failures.append(error),
    )
    client.failures = failures
    yield client
    client.flush()


def identifiers(conversion: dict) -> dict:
    return {k: v for part in conversion["identifiers"] for k, v in part.items()}


def test_no_server_address_or_sdk_user_agent_reaches_x(sdk, deliver, fake_x):
    sdk.identify("user-7", {"email": EMAIL})
    sdk.track("user-7", "Order Completed", {"order_id": "S-1", "revenue": 20})
    context = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (iPhone) Safari/605.1"}
    sdk.track("user-7", "Order Completed", {"order_id": "S-2", "revenue": 30}, context=context)
    sdk.flush()
    deliver()
    assert not sdk.failures
    sent = {c["conversion_id"]: identifiers(c) for c in fake_x.accepted()}
    assert set(sent) == {"S-1", "S-2"}
    assert sent["S-1"]["hashed_email"] == hash_email(EMAIL)  # from the identify before it
    assert "ip_address" not in sent["S-1"] and "user_agent" not in sent["S-1"]
    assert (sent["S-2"]["ip_address"], sent["S-2"]["user_agent"]) == (
        "203.0.113.9",
        context["userAgent"],
    )


def test_integrations_keep_an_event_from_x(sdk, deliver, fake_x):
    traits = {"email": EMAIL}
    sdk.identify("user-8", traits)
    sdk.track("user-8", "Order Completed", {"order_id": "I-1"}, integrations={"All": False})
    sdk.track("user-8", "Order Completed", {"order_id": "I-2"}, integrations={"X": False})
    sdk.track(
        "user-8", "Order Completed", {"order_id": "I-3"}, integrations={"All": False, "X": True}
    )
    sdk.flush()
    deliver()
    assert [c["conversion_id"] for c in fake_x.accepted()] == ["I-3"]


def test_one_bad_message_in_a_batch_does_not_lose_the_others(shop, live_server, deliver, fake_x):
    for name, make in CLIENTS.items():
        failures: list[Exception] = []
        client = make(
            shop.write_key,
            host=live_server,
            on_error=lambda error, _batch, failures=failures: failures.append(error),
            max_retries=1,
        )
        client.identify(f"{name}-u", {"email": EMAIL})
        client.track(f"{name}-u", "Order Completed", {"order_id": f"{name}-1"})
        bad = {"ip": "203.0.113.9, 10.0.0.1"}  # a proxy's list, not an address
        client.track(f"{name}-u", "Order Completed", {"order_id": f"{name}-bad"}, context=bad)
        client.track(f"{name}-u", "Order Completed", {"order_id": f"{name}-2"})
        client.flush()  # queued at once, the four go in one batch request
        client.shutdown()
        assert not failures, (name, failures)
    deliver()
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == sorted(
        f"{name}-{n}" for name in CLIENTS for n in (1, 2)
    )


NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="node or the Node SDKs (make test installs them with npm when node is here)",
)


@needs_node
@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_node_sdks_deliver_without_the_server_as_the_visitor(
    shop, live_server, deliver, fake_x, sdk
):
    only_x = {"All": False, "X": True}
    calls = [
        ["identify", {"userId": "n-1", "traits": {"email": EMAIL}}],
        ["track", {"userId": "n-1", "event": "Order Completed", "properties": {"order_id": "N-1"}}],
        ["track", {"userId": "n-1", "event": "Order Completed", "properties": {"order_id": "N-2"},
                   "integrations": {"All": False}}],
        ["track", {"userId": "n-1", "event": "Order Completed", "properties": {"order_id": "N-3"},
                   "context": {"ip": "203.0.113.9, 10.0.0.1"}}],
        ["track", {"userId": "n-1", "event": "Order Completed", "properties": {"order_id": "N-4"},
                   "integrations": only_x}],
    ]  # fmt: skip
    done = subprocess.run(
        [NODE, "send.mjs", sdk, live_server, shop.write_key, json.dumps(calls)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # the SDK saw no failure
    deliver()
    sent = {c["conversion_id"]: identifiers(c) for c in fake_x.accepted()}
    assert set(sent) == {"N-1", "N-4"}  # N-2 kept from X, N-3 refused alone
    for found in sent.values():
        assert found["hashed_email"] == hash_email(EMAIL)
        assert "ip_address" not in found and "user_agent" not in found

"""What each answer in the spec's status table means for a batch."""

import pytest

from xtag.core.x_answers import (
    LONGEST_WAIT,
    RateLimit,
    believable,
    classify,
    error_message,
    rate_limit,
)

OK_BODY = (
    '{"request":{"params":{"account_id":"18ce552mlaq"}},'
    '"data":{"conversions_processed":2,"debug_id":"ff02e052-36e4-47d6-bdf0-6d8986446562"}}'
)
BAD_BODY = (
    '{"errors":[{"code":"INVALID_PARAMETER",'
    '"message":"event_id (o6dkt) is not a single event tag (SET)",'
    '"parameter":"event_id"}],"request":{"params":{}}}'
)


def test_200_records_debug_id_and_processed():
    verdict = classify(200, {}, OK_BODY)
    assert (verdict.kind, verdict.debug_id, verdict.processed) == (
        "delivered",
        "ff02e052-36e4-47d6-bdf0-6d8986446562",
        2,
    )


def test_400_is_invalid_with_xs_message():
    verdict = classify(400, {}, BAD_BODY)
    assert verdict.kind == "invalid"
    assert "event_id (o6dkt) is not a single event tag (SET)" in verdict.message


@pytest.mark.parametrize("status", [408, 423, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status):
    assert classify(status, {}, "").kind == "retry"


def test_timeouts_and_connection_errors_are_retried():
    verdict = classify(None, {}, "", "timed out waiting for X")
    assert (verdict.kind, verdict.message) == ("retry", "timed out waiting for X")


def test_429_waits_until_reset_and_says_the_budget_is_spent():
    headers = {"x-rate-limit-reset": "1900000000", "x-rate-limit-remaining": "3"}
    verdict = classify(429, headers, '{"errors":[]}')
    assert (verdict.kind, verdict.retry_at) == ("retry", 1900000000.0)
    assert rate_limit(429, headers) == (0, 1900000000.0)  # whatever "remaining" says


def test_the_budget_is_read_from_any_answer_that_states_it():
    headers = {"X-Rate-Limit-Remaining": "5", "X-Rate-Limit-Reset": "1900000000"}
    assert rate_limit(200, headers) == RateLimit(5, 1900000000.0)
    assert rate_limit(503, headers) == RateLimit(5, 1900000000.0)
    assert rate_limit(200, {"X-Rate-Limit-Remaining": "5"}) is None
    assert rate_limit(None, {}) is None  # no answer
    assert rate_limit(200, {**headers, "X-Rate-Limit-Remaining": "nan"}) is None
    assert classify(429, {"x-rate-limit-reset": "inf"}, "").retry_at is None


def test_a_reset_further_than_x_windows_is_not_believed():
    now = 1_900_000_000.0
    assert believable(now + 900, now) == now + 900
    assert believable(now * 1000, now) == now + LONGEST_WAIT  # milliseconds: not years


def test_401_asks_for_a_refresh_403_404_are_terminal():
    assert classify(401, {}, '{"errors":[{"code":"UNAUTHORIZED","message":"bad"}]}').kind == (
        "unauthorized"
    )
    forbidden = classify(
        403, {}, '{"errors":[{"code":"UNAUTHORIZED_CLIENT_APPLICATION","message":"no access"}]}'
    )
    assert forbidden.kind == "terminal" and "UNAUTHORIZED_CLIENT_APPLICATION" in forbidden.message


def test_html_error_bodies_are_decided_by_status():
    verdict = classify(404, {}, "<html><body><h1>Not Found</h1>\n</body></html>")
    assert verdict.kind == "terminal"
    assert verdict.message == "HTTP 404: <html><body><h1>Not Found</h1> </body></html>"


def test_error_message_prefers_xs_errors_list():
    assert (
        error_message('{"errors":[{"code":"A","message":"one"},{"message":"two"}]}') == "A one; two"
    )
    assert error_message("plain   text\nbody") == "plain text body"

"""Tests of the fake X itself, with real clients (Authlib + requests), so it can be trusted."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth1Auth, OAuth1Session, OAuth2Session

from tests import fake_x as fakes
from tests.fake_x import FakeX

fake_x = fakes.fake_x  # the fixture (an assignment, so ruff doesn't see redefinitions)

PIXEL = "o8z6j"
EVENT = "o87ne"
EMAIL_HASH = "e586883b2b4faf78d48300a79e0e15138d664cdf796ffb86e533170a9893eda8"
EMAIL_HASH_2 = "d360d510a224510f373931ce2d6215a799f5a9c1cef221b0149b6b6b50cced62"
PHONE_HASH = "1fa6b8d986d9b9cd01bf36951815158bbde9f520c0567c835dfe34783d0a4231"
MISSING = object()


def conversion(**changes):
    """A valid conversion, with fields replaced (or removed with MISSING)."""
    result = {
        "conversion_time": "2022-02-18T01:14:00.603Z",
        "event_id": EVENT,
        "identifiers": [
            {"hashed_email": EMAIL_HASH},
            {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
        ],
        "number_items": 2,
        "price_currency": "USD",
        "value": "20.00",
        "conversion_id": "order-1001",
        "description": "checkout",
        "contents": [
            {
                "content_id": "sku-1",
                "content_name": "Shoe",
                "content_type": "product",
                "content_group_id": "shoes",
                "content_price": "10.00",
                "num_items": 2,
            }
        ],
    }
    for key, value in changes.items():
        if value is MISSING:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def oauth1(fake, **changes):
    credentials = {
        "client_id": fake.consumer_key,
        "client_secret": fake.consumer_secret,
        "token": fake.oauth1_access_token,
        "token_secret": fake.oauth1_access_token_secret,
    }
    credentials.update(changes)
    return OAuth1Auth(**credentials)


def send(fake, body, *, auth=None, headers=None, pixel=PIXEL, version="12", timeout=5):
    if auth is None and headers is None:
        auth = oauth1(fake)
    return requests.post(
        fake.conversions_url(pixel, version), json=body, auth=auth, headers=headers, timeout=timeout
    )


def token_request(fake, data, *, basic=True, client_secret=None):
    auth = (fake.client_id, client_secret or fake.client_secret) if basic else None
    return requests.post(f"{fake.base_url}/2/oauth2/token", data=data, auth=auth, timeout=5)


# --------------------------------------------------------------------------- OAuth 1.0a


def test_oauth1_signed_batch_is_accepted(fake_x):
    batch = [conversion(), conversion(conversion_id="order-1002", identifiers=[{"twclid": "x"}])]
    response = send(fake_x, {"conversions": batch})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request"] == {"params": {"account_id": "18ce552mlaq"}}
    assert body["data"]["conversions_processed"] == 2
    assert uuid.UUID(body["data"]["debug_id"]).version == 4
    assert response.headers["x-current-api-version"] == "12"
    assert fake_x.accepted() == batch
    assert fake_x.accepted(PIXEL) == batch
    assert fake_x.accepted("other") == []
    [received] = fake_x.requests
    assert received.endpoint == "conversions"
    assert (received.pixel_id, received.version, received.status) == (PIXEL, "12", 200)
    assert (received.auth, received.authenticated) == ("oauth1", True)
    assert received.headers["Authorization"].startswith("OAuth ")
    assert received.response_json == body


@pytest.mark.parametrize(
    "changes",
    [
        {"client_secret": "wrong"},
        {"token_secret": "wrong"},
        {"client_id": "someone-else"},
        {"token": "999-unknown"},
    ],
    ids=["consumer-secret", "token-secret", "consumer-key", "token"],
)
def test_oauth1_bad_credentials_get_401(fake_x, changes):
    response = send(fake_x, {"conversions": [conversion()]}, auth=oauth1(fake_x, **changes))

    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert error["code"] == "UNAUTHORIZED"
    assert fake_x.accepted() == []
    assert fake_x.requests[-1].authenticated is False


def signed_batch(fake_x) -> requests.PreparedRequest:
    """A one-conversion batch for PIXEL, signed with OAuth 1.0a but not sent."""
    return requests.Request(
        "POST",
        fake_x.conversions_url(PIXEL),
        json={"conversions": [conversion()]},
        auth=oauth1(fake_x),
    ).prepare()


def test_oauth1_signature_covers_the_url(fake_x):
    request = signed_batch(fake_x)
    request.url = fake_x.conversions_url("o8z6k")  # signed for another pixel
    with requests.Session() as session:
        response = session.send(request, timeout=5)
    assert response.status_code == 401
    assert "signature" in response.json()["errors"][0]["message"]


def test_oauth1_signature_with_localhost_and_a_query_string(fake_x):
    url = fake_x.conversions_url(PIXEL).replace("127.0.0.1", "localhost") + "?debug=1"
    response = requests.post(
        url, json={"conversions": [conversion()]}, auth=oauth1(fake_x), timeout=5
    )
    assert response.status_code == 200, response.text


def test_oauth1_body_is_not_signed_but_a_replayed_nonce_is_refused(fake_x):
    request = signed_batch(fake_x)
    assert "oauth_body_hash" not in request.headers["Authorization"]
    with requests.Session() as session:
        assert session.send(request, timeout=5).status_code == 200
        replay = session.send(request, timeout=5)
    assert replay.status_code == 401
    assert "nonce" in replay.json()["errors"][0]["message"]

    fake_x.reject_replayed_nonces = False
    with requests.Session() as session:
        assert session.send(request, timeout=5).status_code == 200


def test_oauth1_revoked_token_gets_401(fake_x):
    fake_x.revoke_oauth1_token(fake_x.oauth1_access_token)
    assert send(fake_x, {"conversions": [conversion()]}).status_code == 401


def test_oauth1_realistic_credentials(fake_x):
    fake_x.add_oauth1_token("1234567890123456789-AbCdEfGhIjKlMnOpQrStUvWxYz0123", "s" * 45)
    auth = oauth1(
        fake_x, token="1234567890123456789-AbCdEfGhIjKlMnOpQrStUvWxYz0123", token_secret="s" * 45
    )
    assert send(fake_x, {"conversions": [conversion()]}, auth=auth).status_code == 200


# --------------------------------------------------------------------------- pixel token / none


def test_pixel_token(fake_x):
    ok = send(fake_x, {"conversions": [conversion()]}, headers={"X-Pixel-Token": "pt-test"})
    bad = send(fake_x, {"conversions": [conversion()]}, headers={"X-Pixel-Token": "nope"})

    assert ok.status_code == 200
    assert bad.status_code == 401
    assert bad.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert [r.auth for r in fake_x.requests] == ["pixel_token", "pixel_token"]
    assert len(fake_x.accepted()) == 1


def test_no_credentials_or_two_credentials_get_401(fake_x):
    none = send(fake_x, {"conversions": [conversion()]}, headers={})
    both = send(
        fake_x,
        {"conversions": [conversion()]},
        auth=oauth1(fake_x),
        headers={"X-Pixel-Token": "pt-test"},
    )
    assert none.status_code == 401
    assert both.status_code == 401
    assert "More than one" in both.json()["errors"][0]["message"]
    assert fake_x.requests[0].auth is None
    assert fake_x.requests[1].auth == "multiple"


# --------------------------------------------------------------------------- OAuth 2.0


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_bearer_token_and_refresh_rotation(fake_x):
    old_access, old_refresh = fake_x.access_token, fake_x.refresh_token
    assert (old_access, old_refresh) == ("o2-access-0", "o2-refresh-0")
    assert send(fake_x, {"conversions": [conversion()]}, headers=bearer(old_access)).ok

    refreshed = token_request(fake_x, {"grant_type": "refresh_token", "refresh_token": old_refresh})

    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 7200
    assert token["scope"] == "ads_management offline.access"
    assert token["access_token"] not in (old_access, fake_x.refresh_token)
    assert (token["access_token"], token["refresh_token"]) == (
        fake_x.access_token,
        fake_x.refresh_token,
    )
    assert token["refresh_token"] != old_refresh
    assert fake_x.refresh_count == 1

    old = send(fake_x, {"conversions": [conversion()]}, headers=bearer(old_access))
    new = send(fake_x, {"conversions": [conversion()]}, headers=bearer(token["access_token"]))
    assert old.status_code == 401
    assert new.status_code == 200
    assert fake_x.requests[-1].auth == "bearer"

    again = token_request(fake_x, {"grant_type": "refresh_token", "refresh_token": old_refresh})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_request"
    assert fake_x.refresh_count == 1


def test_refresh_with_client_id_in_body_and_bad_client_auth(fake_x):
    public = token_request(
        fake_x,
        {"grant_type": "refresh_token", "refresh_token": "o2-refresh-0", "client_id": "cid-test"},
        basic=False,
    )
    assert public.status_code == 200

    wrong_secret = token_request(
        fake_x,
        {"grant_type": "refresh_token", "refresh_token": fake_x.refresh_token},
        client_secret="wrong",
    )
    no_client = token_request(
        fake_x,
        {"grant_type": "refresh_token", "refresh_token": fake_x.refresh_token},
        basic=False,
    )
    assert wrong_secret.status_code == 401
    assert no_client.status_code == 401
    assert fake_x.refresh_count == 1


def test_refresh_with_authlib_oauth2_session(fake_x):
    with OAuth2Session(
        fake_x.client_id,
        fake_x.client_secret,
        token={"access_token": fake_x.access_token, "refresh_token": fake_x.refresh_token},
    ) as session:
        token = session.refresh_token(f"{fake_x.base_url}/2/oauth2/token")
    assert token["access_token"] == fake_x.access_token
    assert token["refresh_token"] == fake_x.refresh_token
    assert fake_x.refresh_count == 1
    assert fake_x.calls("oauth2_token")[0].headers["Authorization"].startswith("Basic ")


def test_expired_access_token_gets_401_until_refreshed(fake_x):
    fake_x.expire_access_token()
    expired = send(fake_x, {"conversions": [conversion()]}, headers=bearer(fake_x.access_token))
    assert expired.status_code == 401
    assert "expired" in expired.json()["errors"][0]["message"]

    token_request(fake_x, {"grant_type": "refresh_token", "refresh_token": fake_x.refresh_token})
    ok = send(fake_x, {"conversions": [conversion()]}, headers=bearer(fake_x.access_token))
    assert ok.status_code == 200


def test_access_token_lifetime(fake_x):
    fake_x.access_token_lifetime = 0
    response = send(fake_x, {"conversions": [conversion()]}, headers=bearer(fake_x.access_token))
    assert response.status_code == 401


def test_concurrent_refresh_with_the_same_token_one_wins(fake_x):
    fake_x.token_delay = 0.3
    results = []

    def refresh():
        data = {"grant_type": "refresh_token", "refresh_token": "o2-refresh-0"}
        results.append(token_request(fake_x, data).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 400]
    assert fake_x.refresh_count == 1
    assert time.monotonic() - started < 0.6  # the two were served concurrently


def test_oauth2_authorization_code_with_pkce(fake_x):
    redirect_uri = "http://127.0.0.1:9/admin/x/callback"
    verifier = generate_token(48)
    with OAuth2Session(
        fake_x.client_id,
        fake_x.client_secret,
        scope="ads_management offline.access",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    ) as session:
        url, state = session.create_authorization_url(
            f"{fake_x.base_url}/i/oauth2/authorize", code_verifier=verifier
        )
        redirect = requests.get(url, allow_redirects=False, timeout=5)
        assert redirect.status_code == 302
        location = redirect.headers["Location"]
        assert location.startswith(redirect_uri + "?")
        assert parse_qs(urlsplit(location).query)["state"] == [state]
        token = session.fetch_token(
            f"{fake_x.base_url}/2/oauth2/token",
            authorization_response=location,
            code_verifier=verifier,
        )
    assert token["scope"] == "ads_management offline.access"
    assert token["access_token"] == fake_x.access_token
    assert token["refresh_token"] == fake_x.refresh_token
    ok = send(fake_x, {"conversions": [conversion()]}, headers=bearer(token["access_token"]))
    assert ok.status_code == 200

    # The code is single use.
    code = parse_qs(urlsplit(location).query)["code"][0]
    reuse = token_request(
        fake_x,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )
    assert reuse.status_code == 400


def authorize_code(fake, verifier, redirect_uri="http://127.0.0.1:9/cb", scope=None):
    import hashlib

    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    params = {
        "response_type": "code",
        "client_id": fake.client_id,
        "redirect_uri": redirect_uri,
        "scope": scope or "ads_management offline.access",
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    redirect = requests.get(
        f"{fake.base_url}/i/oauth2/authorize", params=params, allow_redirects=False, timeout=5
    )
    assert redirect.status_code == 302
    return parse_qs(urlsplit(redirect.headers["Location"]).query)


def test_oauth2_pkce_mismatch_and_redirect_mismatch(fake_x):
    code = authorize_code(fake_x, "v" * 43)["code"][0]
    bad_verifier = token_request(
        fake_x,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:9/cb",
            "code_verifier": "w" * 43,
        },
    )
    assert bad_verifier.status_code == 400
    assert bad_verifier.json()["error"] == "invalid_request"

    code = authorize_code(fake_x, "v" * 43)["code"][0]
    bad_redirect = token_request(
        fake_x,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:9/other",
            "code_verifier": "v" * 43,
        },
    )
    assert bad_redirect.status_code == 400


def test_oauth2_without_offline_access_gets_no_refresh_token(fake_x):
    code = authorize_code(fake_x, "v" * 43, scope="ads_management")["code"][0]
    token = token_request(
        fake_x,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:9/cb",
            "code_verifier": "v" * 43,
        },
    ).json()
    assert "refresh_token" not in token


def test_oauth2_denied(fake_x):
    fake_x.deny_authorization = True
    answer = authorize_code(fake_x, "v" * 43)
    assert answer == {"error": ["access_denied"], "state": ["st4te"]}


# --------------------------------------------------------------------------- 3-legged OAuth 1.0a


def test_oauth1_three_legged_flow(fake_x):
    callback = "http://127.0.0.1:9/admin/x/oauth1/callback"
    fake_x.oauth1_user = {"user_id": "777", "screen_name": "shop_owner"}
    with OAuth1Session(
        fake_x.consumer_key, fake_x.consumer_secret, redirect_uri=callback
    ) as session:
        request_token = session.fetch_request_token(f"{fake_x.base_url}/oauth/request_token")
        assert request_token["oauth_callback_confirmed"] == "true"
        url = session.create_authorization_url(f"{fake_x.base_url}/oauth/authorize")
        redirect = requests.get(url, allow_redirects=False, timeout=5)
        assert redirect.status_code == 302
        location = redirect.headers["Location"]
        assert location.startswith(callback + "?")
        session.parse_authorization_response(location)
        token = session.fetch_access_token(f"{fake_x.base_url}/oauth/access_token")

    assert token["user_id"] == "777"
    assert token["screen_name"] == "shop_owner"
    assert token["oauth_token"].startswith("777-")
    assert "oauth_authorized_realms" not in token
    assert fake_x.oauth1_tokens()[token["oauth_token"]]["secret"] == token["oauth_token_secret"]

    auth = oauth1(fake_x, token=token["oauth_token"], token_secret=token["oauth_token_secret"])
    assert send(fake_x, {"conversions": [conversion()]}, auth=auth).status_code == 200

    # The request token was used up.
    reuse = requests.post(
        f"{fake_x.base_url}/oauth/access_token",
        auth=OAuth1Auth(
            fake_x.consumer_key,
            fake_x.consumer_secret,
            token=request_token["oauth_token"],
            token_secret=request_token["oauth_token_secret"],
            verifier=parse_qs(urlsplit(location).query)["oauth_verifier"][0],
        ),
        timeout=5,
    )
    assert reuse.status_code == 401


def test_oauth1_request_token_needs_a_valid_signature(fake_x):
    with OAuth1Session(
        fake_x.consumer_key, "wrong", redirect_uri="http://127.0.0.1:9/cb"
    ) as session:
        response = session.post(f"{fake_x.base_url}/oauth/request_token", timeout=5)
    assert response.status_code == 401


def test_oauth1_wrong_verifier_is_refused(fake_x):
    with OAuth1Session(
        fake_x.consumer_key, fake_x.consumer_secret, redirect_uri="http://127.0.0.1:9/cb"
    ) as session:
        session.fetch_request_token(f"{fake_x.base_url}/oauth/request_token")
        url = session.create_authorization_url(f"{fake_x.base_url}/oauth/authorize")
        requests.get(url, allow_redirects=False, timeout=5)
        session.auth.verifier = "not-the-verifier"
        response = session.post(f"{fake_x.base_url}/oauth/access_token", timeout=5)
    assert response.status_code == 401


# --------------------------------------------------------------------------- validation


def test_valid_variants_are_accepted(fake_x):
    batch = [
        conversion(event_id=f"tw-{PIXEL}-{EVENT}"),
        conversion(identifiers=[{"hashed_phone_number": PHONE_HASH}]),
        conversion(identifiers=[{"twclid": "26l4xb2lvkn6xflhtb8ce3m6gh"}]),
        conversion(identifiers=[{"hashed_email": EMAIL_HASH_2, "ip_address": "2001:db8::1"}]),
        conversion(value=20.5, contents=[{"content_price": 9.99, "content_id": "a"}]),
        {
            "conversion_time": "2024-12-31T23:59:59.999Z",
            "event_id": EVENT,
            "identifiers": [{"hashed_email": EMAIL_HASH}],
        },
    ]
    response = send(fake_x, {"conversions": batch})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["conversions_processed"] == len(batch)


def test_500_conversions_are_accepted(fake_x):
    response = send(fake_x, {"conversions": [conversion()] * 500})
    assert response.status_code == 200
    assert response.json()["data"]["conversions_processed"] == 500


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"conversion_time": MISSING}, "conversion_time"),
        ({"conversion_time": "2022-02-18T01:14:00.603"}, "conversion_time"),
        ({"conversion_time": "2022-02-18T01:14:00Z"}, "conversion_time"),
        ({"conversion_time": "2022-02-18T01:14:00.603+00:00"}, "conversion_time"),
        ({"conversion_time": "2022-02-18 01:14:00.603Z"}, "conversion_time"),
        ({"conversion_time": "2022-13-18T01:14:00.603Z"}, "conversion_time"),
        ({"conversion_time": "2022-02-18T01:14:00.603Z\n"}, "conversion_time"),
        ({"conversion_time": 1645146840603}, "conversion_time"),
        ({"event_id": MISSING}, "event_id"),
        ({"event_id": "O87NE"}, "event_id"),
        ({"event_id": "o87-ne"}, "event_id"),
        ({"event_id": f"tw-zzzzz-{EVENT}"}, "event_id"),
        ({"event_id": 12345}, "event_id"),
        ({"identifiers": MISSING}, "identifiers"),
        ({"identifiers": []}, "identifiers"),
        ({"identifiers": {"hashed_email": EMAIL_HASH}}, "identifiers"),
        ({"identifiers": [{}]}, "identifiers"),
        ({"identifiers": [{"ip_address": "203.0.113.7", "user_agent": "UA"}]}, "identifiers"),
        ({"identifiers": [{"user_agent": "UA"}]}, "identifiers"),
        ({"identifiers": [{"hashed_email": "test-email@test.com"}]}, "hashed_email"),
        ({"identifiers": [{"hashed_email": EMAIL_HASH.upper()}]}, "hashed_email"),
        ({"identifiers": [{"hashed_email": EMAIL_HASH[:-1]}]}, "hashed_email"),
        ({"identifiers": [{"hashed_phone_number": "+11234567890"}]}, "hashed_phone_number"),
        ({"identifiers": [{"email": "a@b.c"}, {"twclid": "x"}]}, "email"),
        ({"identifiers": [{"twclid": ""}]}, "twclid"),
        ({"identifiers": [{"twclid": "x", "ip_address": "not-an-ip"}]}, "ip_address"),
        ({"number_items": 0}, "number_items"),
        ({"number_items": "1"}, "number_items"),
        ({"number_items": True}, "number_items"),
        ({"number_items": 1.5}, "number_items"),
        ({"price_currency": "usd"}, "price_currency"),
        ({"price_currency": "US"}, "price_currency"),
        ({"value": 20}, "value"),
        ({"value": "20"}, "value"),
        ({"value": "20,00"}, "value"),
        ({"value": "$20.00"}, "value"),
        ({"value": None}, "value"),
        ({"conversion_id": 1001}, "conversion_id"),
        ({"description": ["x"]}, "description"),
        ({"contents": {"content_id": "a"}}, "contents"),
        ({"contents": ["sku-1"]}, "contents"),
        ({"contents": [{"content_id": 1}]}, "content_id"),
        ({"contents": [{"content_price": 10}]}, "content_price"),
        ({"contents": [{"content_price": "10"}]}, "content_price"),
        ({"contents": [{"num_items": 0}]}, "num_items"),
        ({"contents": [{"content_name": 5}]}, "content_name"),
        ({"contents": [{"sku": "a"}]}, "sku"),
        ({"email": "someone@example.com"}, "email"),
    ],
)
def test_invalid_conversion_rejects_the_whole_batch(fake_x, changes, parameter):
    batch = [conversion(conversion_id="good"), conversion(**changes)]
    response = send(fake_x, {"conversions": batch})

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["request"] == {"params": {}}
    assert {e["parameter"] for e in body["errors"]} == {parameter}
    assert body["errors"][0]["code"] == "INVALID_PARAMETER"
    assert "conversions[1]" in body["errors"][0]["message"] or parameter == "event_id"
    assert fake_x.accepted() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"conversions": []},
        {"conversions": "x"},
        {"conversions": [conversion()] * 501},
        [conversion()],
        {"conversions": [conversion()], "extra": 1},
    ],
    ids=["no-conversions", "empty", "not-a-list", "501", "list-body", "extra-key"],
)
def test_invalid_body_is_rejected(fake_x, body):
    response = send(fake_x, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "INVALID_PARAMETER"


def test_non_json_bodies_are_rejected(fake_x):
    url = fake_x.conversions_url(PIXEL)
    not_json = requests.post(
        url,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        auth=oauth1(fake_x),
        timeout=5,
    )
    nan = requests.post(
        url,
        data=b'{"conversions": [{"value": NaN}]}',
        headers={"Content-Type": "application/json"},
        auth=oauth1(fake_x),
        timeout=5,
    )
    form = requests.post(url, data={"conversions": "x"}, auth=oauth1(fake_x), timeout=5)
    assert [not_json.status_code, nan.status_code, form.status_code] == [400, 400, 400]


def test_unknown_event_and_long_form(fake_x):
    fake_x.events = {PIXEL: {EVENT}}
    unknown = send(fake_x, {"conversions": [conversion(event_id="o6dkt")]})
    assert unknown.status_code == 400
    assert unknown.json() == {
        "errors": [
            {
                "code": "INVALID_PARAMETER",
                "message": "event_id (o6dkt) is not a single event tag (SET)",
                "parameter": "event_id",
            }
        ],
        "request": {"params": {}},
    }
    unknown_long = send(fake_x, {"conversions": [conversion(event_id=f"tw-{PIXEL}-o6dkt")]})
    assert unknown_long.status_code == 400
    long_form = send(fake_x, {"conversions": [conversion(event_id=f"tw-{PIXEL}-{EVENT}")]})
    assert long_form.status_code == 200
    other_pixel = send(fake_x, {"conversions": [conversion(event_id="o6dkt")]}, pixel="abc12")
    assert other_pixel.status_code == 200  # events only configured for PIXEL


def test_reject_conversion_if_hook(fake_x):
    fake_x.reject_conversion_if = lambda c: (
        "duplicate order" if c.get("conversion_id", "").startswith("bad") else None
    )
    mixed = send(fake_x, {"conversions": [conversion(), conversion(conversion_id="bad-1")]})
    assert mixed.status_code == 400
    assert mixed.json()["errors"][0]["message"] == "conversions[1]: duplicate order"
    assert send(fake_x, {"conversions": [conversion()]}).status_code == 200
    assert len(fake_x.accepted()) == 1


def test_unknown_pixel_and_unknown_route_answer_html_404(fake_x):
    fake_x.pixels = {PIXEL}
    unknown = send(fake_x, {"conversions": [conversion()]}, pixel="zzzzz")
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"].startswith("text/html")
    assert "Not Found" in unknown.text
    with pytest.raises(ValueError):
        unknown.json()
    route = requests.post(f"{fake_x.base_url}/12/measurement/nope", json={}, timeout=5)
    assert route.status_code == 404
    assert route.headers["Content-Type"].startswith("text/html")
    assert fake_x.requests[-1].endpoint == "unknown"
    assert send(fake_x, {"conversions": [conversion()]}).status_code == 200


def test_versions(fake_x):
    fake_x.supported_versions = {"11", "12"}
    fake_x.deprecated_versions = {"11"}
    old = send(fake_x, {"conversions": [conversion()]}, version="11")
    assert old.status_code == 200
    assert "deprecated" in old.headers["x-api-warn"]
    assert send(fake_x, {"conversions": [conversion()]}, version="9").status_code == 404


# --------------------------------------------------------------------------- scripting


def test_fail_next(fake_x):
    fake_x.fail_next(503, n=2)
    fake_x.fail_next(429, headers={"x-rate-limit-reset": "1999999999"})
    fake_x.fail_next(400, body="<html>oops</html>")
    statuses = [send(fake_x, {"conversions": [conversion()]}) for _ in range(5)]

    assert [r.status_code for r in statuses] == [503, 503, 429, 400, 200]
    assert statuses[0].json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
    assert statuses[2].json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    assert statuses[2].headers["x-rate-limit-reset"] == "1999999999"
    assert statuses[2].headers["x-rate-limit-remaining"] == "0"
    assert statuses[3].headers["Content-Type"].startswith("text/html")
    assert [r.scripted for r in fake_x.requests] == [True, True, True, True, False]
    assert len(fake_x.accepted()) == 1


def test_fail_next_429_default_reset_is_soon(fake_x):
    fake_x.fail_next(429)
    response = send(fake_x, {"conversions": [conversion()]})
    assert 0 < int(response.headers["x-rate-limit-reset"]) - time.time() <= 2


def test_fail_next_on_the_token_endpoint(fake_x):
    fake_x.fail_next(503, endpoint="oauth2_token")
    data = {"grant_type": "refresh_token", "refresh_token": fake_x.refresh_token}
    assert token_request(fake_x, data).status_code == 503
    assert send(fake_x, {"conversions": [conversion()]}).status_code == 200
    assert token_request(fake_x, data).status_code == 200
    with pytest.raises(ValueError):
        fake_x.fail_next(500, endpoint="nope")


def test_hang_next_makes_the_client_time_out_but_x_still_processes(fake_x):
    fake_x.hang_next(1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        send(fake_x, {"conversions": [conversion()]}, timeout=0.3)
    assert fake_x.requests[0].status is None
    assert fake_x.wait_for(lambda: fake_x.requests[0].status == 200, timeout=5)
    assert len(fake_x.accepted()) == 1

    started = time.monotonic()
    assert send(fake_x, {"conversions": [conversion()]}).status_code == 200
    assert time.monotonic() - started < 0.5


def test_rate_limit_headers_and_429(fake_x):
    first = send(fake_x, {"conversions": [conversion()]})
    second = send(fake_x, {"conversions": [conversion()]})
    assert first.headers["x-rate-limit-limit"] == "100000"
    assert int(first.headers["x-rate-limit-remaining"]) == 99999
    assert int(second.headers["x-rate-limit-remaining"]) == 99998
    assert int(first.headers["x-rate-limit-reset"]) > time.time()

    fake_x.rate_limit_remaining = 1
    fake_x.rate_limit_reset = int(time.time()) + 1
    last = send(fake_x, {"conversions": [conversion()]})
    limited = send(fake_x, {"conversions": [conversion()]})
    assert (last.status_code, last.headers["x-rate-limit-remaining"]) == (200, "0")
    assert limited.status_code == 429
    assert limited.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
    reset = int(limited.headers["x-rate-limit-reset"])
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    after = send(fake_x, {"conversions": [conversion()]})
    assert after.status_code == 200
    assert int(after.headers["x-rate-limit-remaining"]) == 99999

    fake_x.rate_limit_remaining = None
    assert "x-rate-limit-remaining" not in send(fake_x, {"conversions": [conversion()]}).headers


def test_wait_for_times_out():
    fake = FakeX()
    started = time.monotonic()
    assert fake.wait_for(lambda: False, timeout=0.1) is False
    assert time.monotonic() - started < 1


def test_concurrent_requests_are_served_in_parallel(fake_x):
    fake_x.hang_next(0.3, n=8)
    results = []

    def post(i):
        results.append(send(fake_x, {"conversions": [conversion(conversion_id=f"c{i}")]}))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 2
    assert [r.status_code for r in results] == [200] * 8
    assert sorted(c["conversion_id"] for c in fake_x.accepted()) == [f"c{i}" for i in range(8)]
    assert sorted(r.seq for r in fake_x.requests) == list(range(1, 9))


def test_context_manager_and_custom_credentials():
    with FakeX(consumer_key="k", consumer_secret="s", access_token="1-t", pixel_token="p") as fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        ok = send(fake, {"conversions": [conversion()]}, auth=oauth1(fake))
        assert ok.status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(fake.conversions_url(PIXEL), json={}, timeout=2)


def test_oauth1_denied_and_oob(fake_x):
    fake_x.deny_authorization = True
    callback = "http://127.0.0.1:9/cb"
    with OAuth1Session(fake_x.consumer_key, fake_x.consumer_secret, redirect_uri=callback) as s:
        token = s.fetch_request_token(f"{fake_x.base_url}/oauth/request_token")
        url = s.create_authorization_url(f"{fake_x.base_url}/oauth/authorize")
    denied = requests.get(url, allow_redirects=False, timeout=5)
    assert denied.headers["Location"] == f"{callback}?denied={token['oauth_token']}"

    fake_x.deny_authorization = False
    with OAuth1Session(fake_x.consumer_key, fake_x.consumer_secret, redirect_uri="oob") as s:
        s.fetch_request_token(f"{fake_x.base_url}/oauth/request_token")
        page = requests.get(
            s.create_authorization_url(f"{fake_x.base_url}/oauth/authenticate"), timeout=5
        )
        pin = page.text.split("<code id='oauth_pin'>")[1].split("<")[0]
        token = s.fetch_access_token(f"{fake_x.base_url}/oauth/access_token", verifier=pin)
    assert token["oauth_token"] in fake_x.oauth1_tokens()


def test_oauth1_callback_must_be_registered(fake_x):
    fake_x.oauth1_callback_urls = {"http://127.0.0.1:9/registered"}
    with OAuth1Session(
        fake_x.consumer_key, fake_x.consumer_secret, redirect_uri="http://evil.example/cb"
    ) as session:
        response = session.post(f"{fake_x.base_url}/oauth/request_token", timeout=5)
    assert response.status_code == 401


def test_oauth2_authorize_rejects_unknown_client_or_redirect(fake_x):
    fake_x.oauth2_redirect_uris = {"http://127.0.0.1:9/cb"}
    base = {"response_type": "code", "state": "s", "code_challenge": "c" * 43}
    url = f"{fake_x.base_url}/i/oauth2/authorize"
    bad_client = requests.get(
        url,
        params={**base, "client_id": "nope", "redirect_uri": "http://127.0.0.1:9/cb"},
        allow_redirects=False,
        timeout=5,
    )
    bad_redirect = requests.get(
        url,
        params={**base, "client_id": fake_x.client_id, "redirect_uri": "http://127.0.0.1:9/x"},
        allow_redirects=False,
        timeout=5,
    )
    assert (bad_client.status_code, bad_redirect.status_code) == (400, 400)

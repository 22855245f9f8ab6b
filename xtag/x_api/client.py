"""The one outbound call: POST a batch of conversions for one pixel."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from xtag.core import fastjson
from xtag.core.x_answers import BODY_KEPT


@dataclass(frozen=True)
class Answer:
    status: int | None
    headers: dict[str, str]
    body: str
    duration_ms: int
    error: str | None = None


def conversions_url(base: str, version: str, pixel_id: str) -> str:
    return f"{base}/{version}/measurement/conversions/{pixel_id}"


def body_of(conversions: list[dict]) -> str:
    """The request body X takes; also what the delivery log keeps."""
    return fastjson.dumps({"conversions": conversions})


def post(
    session: requests.Session,
    url: str,
    body: str,
    auth: requests.auth.AuthBase,
    timeout: tuple[float, float],
) -> Answer:
    started = time.monotonic()
    try:
        response = session.post(
            url,
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            auth=auth,
            timeout=timeout,
        )
    except requests.Timeout:
        return Answer(None, {}, "", _ms(started), "timed out waiting for X")
    except requests.RequestException as exc:
        return Answer(None, {}, "", _ms(started), f"connection to X failed: {type(exc).__name__}")
    return Answer(
        response.status_code,
        dict(response.headers),
        response.text[:BODY_KEPT],
        _ms(started),
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

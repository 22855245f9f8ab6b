"""Building the fake's HTTP answers: JSON, X's HTML 404 page, redirects with a query string."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from werkzeug.wrappers import Response

_HTML_404 = (
    "<!DOCTYPE html>\n<html><head><title>Page not found / X</title></head>"
    "<body><h1>Not Found</h1><p>Sorry, that page does not exist.</p></body></html>\n"
)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload),
        status=status,
        headers=headers or {},
        content_type="application/json;charset=utf-8",
    )


def html_404() -> Response:
    return Response(_HTML_404, status=404, content_type="text/html;charset=utf-8")


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))

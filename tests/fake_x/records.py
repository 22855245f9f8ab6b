"""What the fake records: its endpoint names, and each request it received with its answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = (
    "conversions",
    "oauth2_token",
    "oauth2_authorize",
    "oauth1_request_token",
    "oauth1_authorize",
    "oauth1_access_token",
)


@dataclass
class ReceivedRequest:
    """One HTTP request the fake received, and what it answered."""

    seq: int
    method: str
    path: str
    url: str
    endpoint: str  # one of ENDPOINTS, or "unknown"
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()
    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None  # parsed JSON body (floats as float), None if not JSON
    version: str | None = None
    pixel_id: str | None = None
    # Credential presented: "oauth1" | "pixel_token" | "bearer" | "multiple" | another scheme
    # (e.g. "basic") | None; "oauth2_client" on the token endpoint.
    auth: str | None = None
    authenticated: bool | None = None  # None: not checked (scripted answer)
    auth_error: str | None = None
    scripted: bool = False  # answered by fail_next
    status: int | None = None  # None while still being processed (e.g. hang_next)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    answered_at: float | None = None

    @property
    def conversions(self) -> list[dict]:
        if isinstance(self.json, dict) and isinstance(self.json.get("conversions"), list):
            return self.json["conversions"]
        return []

    @property
    def response_json(self) -> Any:
        try:
            return json.loads(self.response_body)
        except ValueError:
            return None

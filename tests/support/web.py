"""Signing in as the admin's users and the API's clients do."""

from __future__ import annotations

import re

from tests.support import factories
from xtag.extensions import db
from xtag.models import ApiToken


def login(client, role="marketer"):
    factories.user(f"{role}@example.com", role=role, password="correct horse")
    r = client.post("/login", data={"email": f"{role}@example.com", "password": "correct horse"})
    assert r.status_code == 302


def csrf(client, path):
    return re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).get_data(as_text=True)
    ).group(1)


def token_for(role: str) -> dict:
    user = factories.user(f"{role}@example.com", role=role)
    row, token = ApiToken.issue(user)
    db.session.add(row)
    db.session.commit()
    return {"Authorization": f"Bearer {token}"}

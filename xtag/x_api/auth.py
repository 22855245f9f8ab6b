"""One auth strategy per connection type, as requests auth objects.

Credentials are handed in decrypted, held only in memory for one request.
"""

from __future__ import annotations

import requests
from authlib.integrations.requests_client import OAuth1Auth


class PixelToken(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["X-Pixel-Token"] = self.token
        return request


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def for_connection(auth_type: str, credentials: dict) -> requests.auth.AuthBase:
    if auth_type == "oauth1":
        # OAuth 1.0a HMAC-SHA1; a JSON body is not part of the signature base string.
        return OAuth1Auth(
            client_id=credentials["consumer_key"],
            client_secret=credentials["consumer_secret"],
            token=credentials["access_token"],
            token_secret=credentials["access_token_secret"],
        )
    if auth_type == "pixel_token":
        return PixelToken(credentials["token"])
    if auth_type == "oauth2":
        return Bearer(credentials["access_token"])
    raise ValueError(f"unknown auth type {auth_type!r}")

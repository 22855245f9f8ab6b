"""A realistic fake of X for the test suite: Ads Conversions API, OAuth 1.0a and OAuth 2.0.

`FakeX` is a real, threaded HTTP server on 127.0.0.1 (random free port) that follows the
contract in the shared spec (x-conversions-api.md):

- ``POST /{version}/measurement/conversions/{pixel_id}`` authenticated by exactly one of
  OAuth 1.0a HMAC-SHA1 (verified by oauthlib's server-side ``ResourceEndpoint``),
  ``X-Pixel-Token`` or ``Authorization: Bearer`` (the current OAuth 2.0 access token).
  Batches are validated like X does: all or nothing, 400 ``INVALID_PARAMETER``.
- ``POST /2/oauth2/token`` (refresh_token with rotation, authorization_code with PKCE)
  and ``GET /i/oauth2/authorize`` (approves at once and redirects back).
- ``POST /oauth/request_token``, ``GET /oauth/authorize`` (and ``/oauth/authenticate``),
  ``POST /oauth/access_token``: the 3-legged OAuth 1.0a flow, via oauthlib's endpoints.

Tests script it (``fail_next``, ``hang_next``, rate limits, ``reject_conversion_if``) and
inspect it (``requests``, ``accepted()``, ``refresh_count``, ``wait_for``).

Modules, by concern: ``server`` (FakeX, routing, recording, the ``fake_x`` fixture),
``conversions`` and ``validation`` (the conversions endpoint and X's rules for its body),
``oauth1``, ``oauth2``, ``limits`` (rate limits and scripted failures), ``records`` and
``responses``. Import from here: this package's names below are its public face.
"""

from .oauth2 import OAUTH2_SCOPE
from .records import ENDPOINTS, ReceivedRequest
from .server import FakeX, fake_x
from .validation import MAX_CONVERSIONS, validate_batch, validate_conversion

__all__ = [
    "ENDPOINTS",
    "MAX_CONVERSIONS",
    "OAUTH2_SCOPE",
    "FakeX",
    "ReceivedRequest",
    "fake_x",
    "validate_batch",
    "validate_conversion",
]

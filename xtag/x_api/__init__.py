"""Every HTTP exchange with X: auth strategies, the conversions request, the
OAuth handshakes and the OAuth 2.0 refresh, each with one timeout setting.
Imports only xtag.core: callers hand in the settings and credentials."""

CONNECT_SECONDS = 5


def timeout(read_seconds: float) -> tuple[float, float]:
    """(connect, read) for every request to X; read is XTAG_X_TIMEOUT_SECONDS."""
    return CONNECT_SECONDS, read_seconds

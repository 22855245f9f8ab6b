"""Credentials at rest: MultiFernet over XTAG_ENCRYPTION_KEYS.

The first key encrypts, every key decrypts, so keys rotate by putting a new
key first, re-encrypting, then dropping the old one.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialError(RuntimeError):
    """Stored credentials that none of the configured keys can open."""


def cipher(keys: list[str]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])


def encrypt_json(keys: list[str], data: dict) -> str:
    return cipher(keys).encrypt(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(keys: list[str], token: str) -> dict:
    try:
        return json.loads(cipher(keys).decrypt(token.encode()))
    except InvalidToken:
        raise CredentialError(
            "stored credentials cannot be decrypted with XTAG_ENCRYPTION_KEYS"
        ) from None


def rotate(keys: list[str], token: str) -> str:
    """The same plaintext, encrypted with the first key."""
    try:
        return cipher(keys).rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialError(
            "stored credentials cannot be decrypted with XTAG_ENCRYPTION_KEYS"
        ) from None

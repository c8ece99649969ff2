"""Signatures: Standard Webhooks (what csnotify sends), CloudStack 4.20 webhooks
(``--format cloudstack``) and CloudStack API requests (HMAC-SHA1, for the API source).

Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.
A key written ``whsec_<base64>`` is used as the decoded bytes, as Standard Webhooks
libraries read it; any other key is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from csnotify.errors import BadInput

WHSEC = "whsec_"
KEY_BYTES = 24
MAX_KEY = 1024


def generate_key() -> str:
    return WHSEC + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def key_bytes(key: str) -> bytes:
    if key.startswith(WHSEC):
        return base64.b64decode(key[len(WHSEC) :], validate=True)
    return key.encode()


def validate_key(key: str) -> str:
    if not key or key != key.strip():
        raise BadInput(
            "the signing key is empty or has leading/trailing spaces; use --key generate"
        )
    if len(key) > MAX_KEY:
        raise BadInput(f"the signing key is longer than {MAX_KEY} characters")
    if key.startswith(WHSEC):
        try:
            raw = key_bytes(key)
        except (binascii.Error, ValueError):
            raise BadInput(
                "the signing key starts with whsec_ but the rest is not base64;"
                " give the key exactly as issued, or use --key generate"
            ) from None
        if not raw:
            raise BadInput("the whsec_ signing key is empty; use --key generate")
    return key


def whsec_form(key: str) -> str:
    """The key as Standard Webhooks libraries take it."""
    if key.startswith(WHSEC):
        return key
    return WHSEC + base64.b64encode(key.encode()).decode()


def standard_signature(key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_bytes(key), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def cloudstack_webhook_signature(key: str, body: bytes) -> str:
    """``X-CS-Signature`` as CloudStack 4.20 sends it: Base64(HMAC-SHA256(key, body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()

"""RSA keys for Apps: the testbed's own Apps and the tests that need an App private key.

Generating a 2048-bit key takes a noticeable fraction of a second, so callers make one and
share it (the tests hold one per session, tests/conftest.py: `app_key`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class KeyPair:
    """One RSA key in the encodings the bot meets."""

    pkcs1_pem: str
    """`BEGIN RSA PRIVATE KEY`: what GitHub hands out for an App."""
    pkcs8_pem: str
    """`BEGIN PRIVATE KEY`: what most tooling writes; the bot reads both."""
    public_pem: str
    """`BEGIN PUBLIC KEY`: what verifies the App's JWTs."""


def new_key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def private(form: serialization.PrivateFormat) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, form, serialization.NoEncryption()
        ).decode()

    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(
        pkcs1_pem=private(serialization.PrivateFormat.TraditionalOpenSSL),
        pkcs8_pem=private(serialization.PrivateFormat.PKCS8),
        public_pem=public.decode(),
    )

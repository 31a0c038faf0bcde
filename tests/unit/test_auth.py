"""API keys and session tokens, on a fake clock."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rtcore.core.auth import (
    ApiKey,
    CredentialError,
    Principal,
    SessionSettings,
    check_api_key,
    mint_token,
    verify_session,
)
from rtcore.protocol import CloseCode

NOW = 1_800_000_000.0
SECRET = "x" * 64
HS = SessionSettings(key=SECRET)


def code_of(fn: object, *args: object) -> int:
    with pytest.raises(CredentialError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.message
    return info.value.code


def test_api_keys_missing_unknown_expired_and_rotation() -> None:
    keys = (ApiKey("old", expires=NOW), ApiKey("new"))
    assert code_of(check_api_key, keys, None, NOW) == CloseCode.API_KEY_MISSING
    assert code_of(check_api_key, keys, "", NOW) == CloseCode.API_KEY_MISSING
    assert code_of(check_api_key, keys, "guess", NOW) == CloseCode.API_KEY_INVALID
    assert code_of(check_api_key, keys, "ol", NOW) == CloseCode.API_KEY_INVALID  # no prefix match
    assert check_api_key(keys, "old", NOW - 1).key == "old"
    assert code_of(check_api_key, keys, "old", NOW) == CloseCode.API_KEY_EXPIRED
    assert check_api_key(keys, "new", NOW + 10**6).key == "new"
    assert "new" not in repr(keys[1])  # keys never show up in logs


def hs_token(**claims: object) -> str:
    return jwt.encode({"sub": "u1", "sid": "s1", "exp": NOW + 60, **claims}, SECRET, "HS256")


def test_a_valid_token_names_user_and_session() -> None:
    assert verify_session(HS, hs_token(), NOW) == Principal("u1", "s1", NOW + 60)
    assert verify_session(HS, hs_token(sid=None), NOW).session is None


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (hs_token(exp=NOW - 31), CloseCode.SESSION_EXPIRED),  # beyond the 30 s leeway
        (jwt.encode({"sub": "u1"}, "y" * 40, "HS256"), CloseCode.SESSION_INVALID),  # other secret
        (jwt.encode({"exp": NOW + 60}, SECRET, "HS256"), CloseCode.SESSION_INVALID),  # no sub
        (jwt.encode({"sub": 5}, SECRET, "HS256"), CloseCode.SESSION_INVALID),  # sub not a string
        (jwt.encode({"sub": "u1"}, SECRET, "HS512"), CloseCode.SESSION_INVALID),  # algorithm
        (hs_token(nbf=NOW + 120), CloseCode.SESSION_INVALID),  # not valid yet
        (hs_token(exp="soon"), CloseCode.SESSION_INVALID),
        ("not.a.jwt", CloseCode.SESSION_INVALID),
        ("", CloseCode.SESSION_INVALID),
    ],
)
def test_bad_tokens_are_refused_with_their_code(token: str, code: CloseCode) -> None:
    assert code_of(verify_session, HS, token, NOW) == code


def test_leeway_admits_a_just_expired_token() -> None:
    assert verify_session(HS, hs_token(exp=NOW - 29), NOW).user == "u1"


def test_a_tampered_payload_or_alg_none_is_invalid() -> None:
    header, payload, sig = hs_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert code_of(verify_session, HS, f"{header}.{forged}.{sig}", NOW) == CloseCode.SESSION_INVALID
    unsigned = jwt.encode({"sub": "admin"}, None, algorithm="none")
    assert code_of(verify_session, HS, unsigned, NOW) == CloseCode.SESSION_INVALID


def pem_pair(kind: str) -> tuple[str, str]:
    key = (
        rsa.generate_private_key(65537, 2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_public_key_algorithms(alg: str) -> None:
    private, public = pem_pair(alg)
    settings = SessionSettings(algorithms=(alg,), key=public, audience="chat", issuer="auth")
    token = mint_token(settings, "u9", NOW, 60, private_key=private, session="s9")
    assert verify_session(settings, token, NOW) == Principal("u9", "s9", NOW + 60)
    other_private, _ = pem_pair(alg)
    forged = mint_token(settings, "u9", NOW, 60, private_key=other_private)
    assert code_of(verify_session, settings, forged, NOW) == CloseCode.SESSION_INVALID
    wrong_aud = mint_token(
        SessionSettings(algorithms=(alg,), audience="other", issuer="auth"),
        "u9",
        NOW,
        60,
        private_key=private,
    )
    assert code_of(verify_session, settings, wrong_aud, NOW) == CloseCode.SESSION_INVALID
    # an HS256 token whose secret is the public key must not pass (algorithm confusion)
    confused = jwt.encode({"sub": "u9", "aud": "chat", "iss": "auth"}, "k" * 40, "HS256")
    assert code_of(verify_session, settings, confused, NOW) == CloseCode.SESSION_INVALID


def test_mint_token_round_trips_and_needs_a_private_key_for_rs() -> None:
    assert verify_session(HS, mint_token(HS, "dev", NOW, 30, session="s"), NOW + 10) == Principal(
        "dev", "s", NOW + 30
    )
    with pytest.raises(ValueError):
        mint_token(SessionSettings(algorithms=("RS256",), key="pem"), "dev", NOW, 30)

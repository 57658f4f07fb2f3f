"""Persona-Signature verification (domain/signature.py): pure, on raw bytes, rotation-aware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import signature
from domain.signature import SignatureError, compute, parse_header, sign, verify
from tests.payloads import FIXTURES

NOW = 1_700_000_000
TOLERANCE = 300
NEW, OLD = "wbhsec_new", "wbhsec_old"
BODY = (FIXTURES / "docs_inquiry_approved_overview.json").read_bytes()
APP = Path(signature.__file__).parent


def check(header: str | None, body: bytes = BODY, secrets=(NEW,), now: float = NOW) -> int:
    return verify(body, header, secrets, now, TOLERANCE)


def reason(header: str | None, **kwargs) -> str:
    with pytest.raises(SignatureError) as raised:
        check(header, **kwargs)
    assert raised.value.detail and str(raised.value) == raised.value.detail
    return raised.value.reason


def v1(secret: str = NEW, timestamp: int = NOW, body: bytes = BODY) -> str:
    return compute(secret, timestamp, body)


def test_compute_is_hmac_sha256_of_timestamp_dot_body():
    # A known answer, computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac wbhsec_new
    assert compute(NEW, NOW, b"{}") == "dc3fa3a97370db4c000b193c549ef9a1b82c0016ec3d952bd3219bf36bb4e767"


def test_valid_signature_returns_its_timestamp():
    assert check(sign(NEW, NOW, BODY)) == NOW


def test_upper_case_hex_is_accepted():
    assert check(f"t={NOW},v1={v1().upper()}") == NOW


def test_timestamp_is_covered_by_the_signature():
    assert reason(f"t={NOW + 1},v1={v1()}") == "mismatch"


@pytest.mark.parametrize("good_first", [True, False], ids=["good-first", "good-second"])
@pytest.mark.parametrize(
    "template",
    ["t={t},v1={a} t={t},v1={b}", "t={t},v1={a} v1={b}", "t={t},v1={a},v1={b}"],
    ids=["two-groups", "shared-t", "comma-only"],
)
def test_rotation_header_accepted_with_the_right_signature_in_either_position(template, good_first):
    good, other = v1(), v1(secret="wbhsec_someone_else")
    a, b = (good, other) if good_first else (other, good)
    assert check(template.format(t=NOW, a=a, b=b)) == NOW


def test_rotation_groups_may_carry_different_timestamps():
    header = f"t={NOW - 10 * TOLERANCE},v1={v1(timestamp=NOW - 10 * TOLERANCE)} t={NOW},v1={v1()}"
    assert check(header) == NOW


@pytest.mark.parametrize("signer", [NEW, OLD])
def test_any_configured_secret_verifies(signer):
    assert check(sign(signer, NOW, BODY), secrets=(NEW, OLD)) == NOW


def test_rotation_header_with_old_and_new_signatures_against_either_configuration():
    header = f"t={NOW},v1={v1(NEW)} t={NOW},v1={v1(OLD)}"
    for secrets in [(NEW,), (OLD,), (NEW, OLD), (OLD, NEW)]:
        assert check(header, secrets=secrets) == NOW


@pytest.mark.parametrize("header", [None, "", "   ", "\t\n"])
def test_missing_header(header):
    assert reason(header) == "missing"


@pytest.mark.parametrize(
    "header",
    [
        f"v1={'a' * 64}",  # no t
        f"v1={'a' * 64},t={NOW}",  # v1 before any t
        f"t=abc,v1={'a' * 64}",  # non-numeric t
        f"t=,v1={'a' * 64}",
        f"t=-{NOW},v1={'a' * 64}",
        f"t={NOW}.5,v1={'a' * 64}",
        f"t=1{NOW}{NOW},v1={'a' * 64}",  # absurdly long
        f"t={NOW}",  # no v1
        f"t={NOW},v1=",
        f"t={NOW},v1={'a' * 63}",  # not 64 hex
        f"t={NOW},v1={'a' * 65}",
        f"t={NOW},v1={'g' * 64}",
        f"t={NOW},v0={'a' * 64}",  # unknown scheme only
        "garbage",
        "t:1700000000;v1:abc",
    ],
)
def test_malformed_header(header):
    assert reason(header) == "malformed"


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_accepted_within_tolerance_both_directions(offset):
    timestamp = NOW + offset
    assert check(sign(NEW, timestamp, BODY)) == timestamp


@pytest.mark.parametrize("offset, expected", [(-TOLERANCE - 1, "stale"), (TOLERANCE + 1, "future")])
def test_rejected_outside_tolerance(offset, expected):
    assert reason(sign(NEW, NOW + offset, BODY)) == expected


def test_wrong_secret():
    assert reason(sign("wbhsec_wrong", NOW, BODY)) == "mismatch"


def test_no_secrets_configured_matches_nothing():
    assert reason(sign(NEW, NOW, BODY), secrets=()) == "mismatch"


def test_body_changed_by_one_byte():
    tampered = bytearray(BODY)
    tampered[len(tampered) // 2] ^= 0x01
    assert reason(sign(NEW, NOW, BODY), body=bytes(tampered)) == "mismatch"


def test_reserialised_json_fails():
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reserialised != BODY and json.loads(reserialised) == json.loads(BODY)
    assert reason(sign(NEW, NOW, BODY), body=reserialised) == "mismatch"


def test_parse_header_pairs_every_v1_with_the_t_before_it():
    header = f"t=1,v1={'A' * 64} t=2,v1={'b' * 64} v1={'c' * 64}"
    assert [(p.timestamp, p.signature) for p in parse_header(header)] == [(1, "a" * 64), (2, "b" * 64), (2, "c" * 64)]


# --- properties ---------------------------------------------------------------------------------------

header_tokens = st.sampled_from(
    ["t=", "v1=", "v0=", ",", " ", "=", str(NOW), "-1", "1e9", "a" * 64, "A" * 64, "g" * 64, "\x00", "é"]
)


@given(st.one_of(st.text(), st.lists(st.one_of(header_tokens, st.text(max_size=3))).map("".join)))
def test_arbitrary_header_raises_only_signature_error(header):
    try:
        check(header)
    except SignatureError as error:
        assert error.reason in {"missing", "malformed", "stale", "future", "mismatch"}


@given(
    body=st.binary(max_size=2048),
    secrets=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4, unique=True),
    pick=st.integers(min_value=0),
    offset=st.integers(min_value=-TOLERANCE, max_value=TOLERANCE),
)
def test_any_body_signed_by_any_configured_secret_verifies(body, secrets, pick, offset):
    signer = secrets[pick % len(secrets)]
    assert verify(body, sign(signer, NOW + offset, body), secrets, NOW, TOLERANCE) == NOW + offset


def test_a_header_with_too_many_signatures_is_malformed_before_any_hmac(monkeypatch):
    """Issue 9 (found by a tester): 115 `v1` values in each of 45 joined headers made every unsigned 1 MB
    request compute thousands of HMACs, and four such requests timed out both web workers."""
    from domain import signature

    computed = []
    monkeypatch.setattr(signature, "compute", lambda *args: computed.append(args) or "0" * 64)
    header = " ".join(f"t=1700000000,v1={n:064x}" for n in range(signature.MAX_SIGNATURES + 1))
    with pytest.raises(signature.SignatureError) as refused:
        signature.verify(b"{}", header, ["wbhsec_a", "wbhsec_b"], 1_700_000_000, 300)
    assert refused.value.reason == "malformed" and computed == []


def test_one_hmac_per_secret_and_timestamp_however_many_signatures_share_it(monkeypatch):
    from domain import signature

    computed = []
    real = signature.compute
    monkeypatch.setattr(signature, "compute", lambda *args: computed.append(args) or real(*args))
    header = "t=1700000000," + ",".join(f"v1={n:064x}" for n in range(signature.MAX_SIGNATURES))
    with pytest.raises(signature.SignatureError):
        signature.verify(b"{}", header, ["wbhsec_a", "wbhsec_b"], 1_700_000_000, 300)
    assert len(computed) == 2

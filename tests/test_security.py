"""The attacks of the security review (issue 18), each reproduced through the real CLI and
shown refused or contained."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import pytest

from csnotify.signing import standard_signature

BODY = b'{"event":{"type":"VM.START"},"subscription":"s"}'


def signed(key: str, msg_id: str = "msg_1", at: int | None = None) -> list[str]:
    stamp = int(time.time()) if at is None else at
    signature = standard_signature(key, msg_id, stamp, BODY)
    return ["-H", f"webhook-id: {msg_id}", "-H", f"webhook-timestamp: {stamp}",
            "-H", f"webhook-signature: {signature}"]  # fmt: skip


# -- 1. verify fails closed -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "whsec_", " padded ", "whsec_!!notbase64"])
def test_verify_refuses_a_key_that_cannot_verify(cli, key: str) -> None:
    """A signature made with an empty HMAC key (anyone can make one) is not accepted
    when the receiver's key variable is unset: the key is refused, exit 2."""
    forged = signed("whsec_") if key.startswith("whsec_") else signed("x")
    forged[-1] = "webhook-signature: v1," + base64.b64encode(
        hmac.new(b"", b"msg_1." + forged[3].split(": ")[1].encode() + b"." + BODY,
                 hashlib.sha256).digest()).decode()  # fmt: skip
    r = cli("verify", "--key", key, *forged, "-", input=BODY)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "valid" not in r.stdout


def test_verify_without_any_key_is_usage_error(cli) -> None:
    r = cli("verify", *signed("k"), "-", input=BODY, env={"CSNOTIFY_VERIFY_KEY": ""})
    assert r.exit_code == 2 and "--key-file" in r.stderr


def test_verify_key_file(cli, tmp_path: Path) -> None:
    key_file = tmp_path / "hook.key"
    key_file.write_text("plain-key-1\n")
    r = cli("verify", "--key-file", str(key_file), *signed("plain-key-1"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    key_file.write_text("\n")
    r = cli("verify", "--key-file", str(key_file), *signed("plain-key-1"), "-", input=BODY)
    assert r.exit_code == 2
    r = cli("verify", "--key-file", str(tmp_path / "none"), *signed("k"), "-", input=BODY)
    assert r.exit_code == 2 and "cannot read --key-file" in r.stderr
    r = cli("verify", "--key", "k", "--key-file", str(key_file), "-", input=BODY)
    assert r.exit_code == 2 and "not both" in r.stderr


def test_x_cs_signature_only_with_scheme_cloudstack(cli) -> None:
    """With a plain key, a captured delivery's body signed CloudStack-style (HMAC of the
    body alone, no timestamp) would verify forever: it is checked only when asked."""
    key = "plain-key-1"
    cs = base64.b64encode(hmac.new(key.encode(), BODY, hashlib.sha256).digest()).decode()
    r = cli("verify", "--key", key, "-H", f"X-CS-Signature: {cs}", "-", input=BODY)
    assert r.exit_code == 1 and "--scheme cloudstack" in r.stderr
    r = cli("verify", "--key", key, "--scheme", "cloudstack", "-H", f"X-CS-Signature: {cs}",
            "-", input=BODY)  # fmt: skip
    assert r.exit_code == 0 and "valid cloudstack" in r.stdout
    r = cli("verify", "--key", key, "--scheme", "cloudstack", *signed(key), "-", input=BODY)
    assert r.exit_code == 1 and "no X-CS-Signature" in r.stderr
    r = cli("verify", "--key", key, "--scheme", "bogus", *signed(key), "-", input=BODY)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("tolerance", ["inf", "nan", "-1"])
def test_verify_refuses_a_non_finite_tolerance(cli, tolerance: str) -> None:
    r = cli("verify", "--key", "k", "--tolerance", tolerance, *signed("k", at=1000), "-",
            input=BODY)  # fmt: skip
    assert r.exit_code == 2 and "--tolerance" in r.stderr


@pytest.mark.parametrize("stamp", ["١٧٣٢٥٣٠٠٠٠", "+1732530000", "17.5", "1" * 13, "1_000"])
def test_verify_timestamp_is_ascii_digits(cli, stamp: str) -> None:
    args = signed("k")
    args[3] = f"webhook-timestamp: {stamp}"
    r = cli("verify", "--key", "k", "--tolerance", "0", *args, "-", input=BODY)
    assert r.exit_code == 1 and "webhook-timestamp" in r.stderr


def test_verify_non_ascii_signature_is_invalid_not_a_crash(cli) -> None:
    args = signed("k")
    args[5] = "webhook-signature: v1,é" + "A" * 43
    r = cli("verify", "--key", "k", *args, "-", input=BODY)
    assert r.exit_code == 1 and "does not match" in r.stderr
    r = cli("verify", "--key", "k", "--scheme", "cloudstack", "-H", "X-CS-Signature: é",
            "-", input=BODY)  # fmt: skip
    assert r.exit_code == 1 and "does not match" in r.stderr


def test_verify_seen_refuses_a_replay(cli, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_a"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_b"), "-", input=BODY)
    assert r.exit_code == 0, r.stderr
    r = cli("verify", "--key", "k", "--seen", str(seen), *signed("k", "msg_a"), "-", input=BODY)
    assert r.exit_code == 1 and "already verified" in r.stderr
    assert seen.stat().st_mode & 0o077 == 0
    # an invalid delivery is not recorded
    r = cli("verify", "--key", "other", "--seen", str(seen), *signed("k", "msg_c"), "-",
            input=BODY)  # fmt: skip
    assert r.exit_code == 1 and "msg_c" not in seen.read_text()
    r = cli("verify", "--key", "k", "--seen", str(tmp_path / "no" / "dir"), *signed("k"), "-",
            input=BODY)  # fmt: skip
    assert r.exit_code == 2 and "--seen" in r.stderr

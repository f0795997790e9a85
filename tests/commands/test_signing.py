"""The command wire format without a broker: canonical form, signatures, keys, replay and rate
state, and the JSON Schemas agreeing with the models. The worked example of docs/COMMANDS.md is
checked here, and re-derived with jq + openssl so the format does not depend on Python."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands import (
    ARGS,
    CommandKeyError,
    CommandReply,
    CommandRequest,
    NonceCache,
    RateLimit,
    SlidingWindow,
    canonical_json,
    parse_json_strict,
    parse_trusted_keys,
    sign_command,
    signing_input,
)
from sync.contract import SCHEMA_DIR, SchemaViolation, validate

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "COMMANDS.md"
REQUEST_SCHEMA = SCHEMA_DIR / "commands" / "request.json"
REPLY_SCHEMA = SCHEMA_DIR / "commands" / "reply.json"

# The worked example of docs/COMMANDS.md: fixed keys, so the signatures are fixed too
# (Ed25519 signatures are deterministic).
EXAMPLE_TOPIC = "campus/v1/north-campus/gw-gate-1/cmd/open"
EXAMPLE = {
    "id": "req-0001",
    "name": "open",
    "args": {"gate": "gate-1", "direction": "entry"},
    "issued_at": "2026-11-29T08:00:00Z",
    "expires_at": "2026-11-29T08:00:30Z",
    "nonce": "q3LmV0tZb1d3R2xNa1p4Yw",
    "key_id": "centre-2026a",
}
EXAMPLE_ED_SEED = bytes(range(32))
EXAMPLE_ED_PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
EXAMPLE_ED_SIGNATURE = (
    "n5JUxvXnVRNTaRtTZ3cJmajZg2pqrNdffHbd2d/0z2bF/uwWSH6dIgQ3fLcSlt8OIT7Kg+1GbHO0xXF2+Z1xAA=="
)
EXAMPLE_HMAC_SECRET = bytes(range(100, 132))
EXAMPLE_HMAC_SIGNATURE = "6lboS8mpQeUlixRz4UtKS/LCftpb7VnnOyCcyNNWtIs="
EXAMPLE_SIGNED_TEXT = (
    "campus-cmd/v1\n"
    "campus/v1/north-campus/gw-gate-1/cmd/open\n"
    '{"args":{"direction":"entry","gate":"gate-1"},"expires_at":"2026-11-29T08:00:30Z",'
    '"id":"req-0001","issued_at":"2026-11-29T08:00:00Z","key_id":"centre-2026a","name":"open",'
    '"nonce":"q3LmV0tZb1d3R2xNa1p4Yw"}'
)


def example_keys() -> str:
    return json.dumps(
        {
            "keys": [
                {"id": "centre-2026a", "algorithm": "ed25519", "public_key": EXAMPLE_ED_PUBLIC},
                {
                    "id": "ops-hmac-1",
                    "algorithm": "hmac-sha256",
                    "secret": base64.b64encode(EXAMPLE_HMAC_SECRET).decode(),
                    "commands": ["diagnostics", "open"],
                },
            ]
        }
    )


def test_worked_example_matches_the_documentation() -> None:
    assert signing_input(EXAMPLE_TOPIC, EXAMPLE).decode() == EXAMPLE_SIGNED_TEXT
    ed = Ed25519PrivateKey.from_private_bytes(EXAMPLE_ED_SEED)
    signed = sign_command(EXAMPLE_TOPIC, EXAMPLE, ed25519_private_key=ed)
    assert signed["signature"] == EXAMPLE_ED_SIGNATURE
    hmac_signed = sign_command(
        EXAMPLE_TOPIC, {**EXAMPLE, "key_id": "ops-hmac-1"}, hmac_secret=EXAMPLE_HMAC_SECRET
    )
    assert hmac_signed["signature"] == EXAMPLE_HMAC_SIGNATURE
    doc = DOC.read_text()
    for needle in (
        EXAMPLE_ED_PUBLIC,
        EXAMPLE_ED_SIGNATURE,
        EXAMPLE_HMAC_SIGNATURE,
        EXAMPLE_SIGNED_TEXT.splitlines()[2],
    ):
        assert needle in doc, needle
    keys = parse_trusted_keys(example_keys())
    message = signing_input(EXAMPLE_TOPIC, signed)
    assert keys["centre-2026a"].verify(base64.b64decode(signed["signature"]), message)
    # The same signature over the same command for another gateway does not verify.
    other = EXAMPLE_TOPIC.replace("gw-gate-1", "gw-gate-2")
    assert not keys["centre-2026a"].verify(
        base64.b64decode(signed["signature"]), signing_input(other, signed)
    )
    hmac_message = signing_input(EXAMPLE_TOPIC, hmac_signed)
    assert keys["ops-hmac-1"].verify(base64.b64decode(EXAMPLE_HMAC_SIGNATURE), hmac_message)
    assert not keys["ops-hmac-1"].verify(base64.b64decode(EXAMPLE_HMAC_SIGNATURE), message)
    assert keys["ops-hmac-1"].commands == frozenset({"diagnostics", "open"})


@pytest.mark.skipif(not (shutil.which("jq") and shutil.which("openssl")), reason="needs jq and openssl")
def test_jq_and_openssl_produce_the_same_signatures(tmp_path: Path) -> None:
    """The shell recipe of COMMANDS.md (jq -cS for the canonical form, openssl to sign) agrees
    with the gateway, including non-ASCII text, quotes and control characters."""
    ed = Ed25519PrivateKey.from_private_bytes(EXAMPLE_ED_SEED)
    pem = tmp_path / "centre.pem"
    pem.write_bytes(
        ed.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    topic = "campus/v1/north-campus/gw-gate-1/cmd/ack_alert"
    body: dict[str, Any] = {
        **EXAMPLE,
        "name": "ack_alert",
        "args": {"alert_id": "01ABC", "by": "Zoë Ångström 王", "note": 'said "ok"\t\u0001 / \\ done'},
    }
    envelope_file = tmp_path / "envelope.json"
    envelope_file.write_text(json.dumps(body, indent=2))
    script = (
        f"{{ printf 'campus-cmd/v1\\n%s\\n' '{topic}'; jq -cSj 'del(.signature)' {envelope_file}; }}"
        f" > {tmp_path}/msg"
    )
    subprocess.run(["bash", "-c", script], check=True)
    assert (tmp_path / "msg").read_bytes() == signing_input(topic, body)
    ed_sig = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-inkey", str(pem), "-rawin", "-in", str(tmp_path / "msg")],
        check=True,
        capture_output=True,
    ).stdout
    assert base64.b64encode(ed_sig).decode() == sign_command(topic, body, ed25519_private_key=ed)["signature"]
    mac = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            f"hexkey:{EXAMPLE_HMAC_SECRET.hex()}",
            "-binary",
            str(tmp_path / "msg"),
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert (
        base64.b64encode(mac).decode()
        == sign_command(topic, body, hmac_secret=EXAMPLE_HMAC_SECRET)["signature"]
    )


def test_canonical_json_is_jcs_for_the_allowed_values() -> None:
    # RFC 8785: keys sorted, no whitespace, UTF-8 as is, only the mandatory escapes.
    value = {"b": "é\u2028", "a": [1, True, None, '\u0001"\\'], "A": {"z": -3, "y": ""}}
    assert (
        canonical_json(value)
        == '{"A":{"y":"","z":-3},"a":[1,true,null,"\\u0001\\"\\\\"],"b":"é\u2028"}'.encode()
    )


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": 1.5}',
        b'{"a": 1e3}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1, "a": 2}',
        b'{"a": 9007199254740992}',
        b'{"a": [-9007199254740993]}',
        b"\xff\xfe",
    ],
)
def test_strict_json_refuses_what_would_make_the_signed_form_ambiguous(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json_strict(payload)


def test_strict_json_takes_the_normal_cases() -> None:
    assert parse_json_strict(b'{"a": [1, -9007199254740991, true, null, "x"]}') == {
        "a": [1, -9007199254740991, True, None, "x"]
    }


def test_trusted_keys_parsing() -> None:
    ed = Ed25519PrivateKey.generate()
    pem = (
        ed.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    keys = parse_trusted_keys(
        json.dumps({"keys": [{"id": "pem-key", "algorithm": "ed25519", "public_key": pem}]})
    )
    message = b"campus-cmd/v1\nx"
    assert keys["pem-key"].verify(ed.sign(message), message)
    assert not keys["pem-key"].verify(ed.sign(message), message + b"!")
    assert parse_trusted_keys('{"keys": []}') == {}
    bad = [
        "not json",
        '{"keys": [{"id": "a", "algorithm": "ed25519"}]}',
        '{"keys": [{"id": "a", "algorithm": "ed25519", "public_key": "AAAA"}]}',
        '{"keys": [{"id": "a", "algorithm": "hmac-sha256", "secret": "c2hvcnQ="}]}',
        '{"keys": [{"id": "a", "algorithm": "hmac-sha256", "secret": "!!!"}]}',
        '{"keys": [{"id": "a", "algorithm": "rsa", "secret": "c2hvcnQ="}]}',
        '{"keys": [], "extra": 1}',
        json.dumps(
            {
                "keys": [
                    {"id": "a", "algorithm": "hmac-sha256", "secret": base64.b64encode(b"k" * 32).decode()}
                ]
                * 2
            }
        ),
    ]
    for text in bad:
        with pytest.raises(CommandKeyError):
            parse_trusted_keys(text)


def test_nonce_cache_survives_a_restart_and_forgets_expired_nonces(tmp_path: Path) -> None:
    path = tmp_path / "nonces.json"
    now = time.time()
    cache = NonceCache(3, path)
    assert cache.check_and_add("k", "n1", now + 60, now) is None
    assert cache.check_and_add("k", "n2", now + 1, now) is None
    assert cache.check_and_add("other", "n1", now + 60, now) is None  # nonces are per key
    assert cache.check_and_add("k", "n1", now + 60, now) == "replayed"
    assert cache.check_and_add("k", "n3", now + 60, now) == "nonce_cache_full"
    cache.save()
    # A restarted agent still refuses the replay; the nonce that expired is gone.
    again = NonceCache(3, path)
    assert len(again) == 3
    assert again.check_and_add("k", "n1", now + 60, now) == "replayed"
    assert again.check_and_add("k", "n3", now + 60, now + 2) is None
    assert len(again) == 3 and again.check_and_add("k", "n2", now + 60, now + 2) == "nonce_cache_full"
    path.write_text("garbage")
    assert len(NonceCache(3, path)) == 0


def test_sliding_window() -> None:
    window = SlidingWindow(RateLimit(count=2, per_s=10))
    assert window.allow("g", 100.0) is None
    assert window.allow("g", 101.0) is None
    assert window.allow("g", 102.0) == pytest.approx(8.0)
    assert window.allow("other", 102.0) is None
    assert window.allow("g", 110.0) is None  # the first hit left the window
    assert window.allow("g", 110.5) == pytest.approx(0.5)


def _request(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {**EXAMPLE, "name": name, "args": args, "signature": EXAMPLE_ED_SIGNATURE}


VALID = [
    ("open", {"gate": "gate-1", "direction": "entry"}),
    ("hold_open", {"gate": "g.2", "direction": "exit"}),
    ("lock", {"gate": "gate-1"}),
    ("normal", {"gate": "gate-1"}),
    ("resync_roster", {}),
    ("resync_roster", {"centre_version": 12}),
    ("reload_config", {}),
    ("diagnostics", {}),
    ("set_log_level", {"level": "debug"}),
    ("ack_alert", {"alert_id": "01ABC", "by": "guard"}),
    ("ack_alert", {"alert_id": "01ABC", "by": "guard", "note": "checked"}),
    ("push_config", {"yaml": "gateway: {site: s, id: g}\n"}),
]
INVALID_ARGS = [
    ("open", {"gate": "gate-1"}),
    ("open", {"gate": "gate-1", "direction": "up"}),
    ("open", {"gate": "gate 1", "direction": "entry"}),
    ("lock", {"gate": "gate-1", "direction": "entry"}),
    ("resync_roster", {"centre_version": -1}),
    ("diagnostics", {"verbose": True}),
    ("set_log_level", {"level": "trace"}),
    ("ack_alert", {"alert_id": "", "by": "guard"}),
    ("push_config", {"yaml": ""}),
    ("push_config", {"yaml": "x", "restart": True}),
]


@pytest.mark.parametrize(("name", "args"), VALID)
def test_schema_and_models_accept_the_same_requests(name: str, args: dict[str, Any]) -> None:
    request = _request(name, args)
    validate(request, REQUEST_SCHEMA)
    CommandRequest.model_validate(request)
    ARGS[name].model_validate(args)


@pytest.mark.parametrize(("name", "args"), INVALID_ARGS)
def test_schema_and_models_refuse_the_same_args(name: str, args: dict[str, Any]) -> None:
    with pytest.raises(SchemaViolation):
        validate(_request(name, args), REQUEST_SCHEMA)
    with pytest.raises(ValueError):
        ARGS[name].model_validate(args)


@pytest.mark.parametrize(
    "change",
    [
        {"issued_at": "2026-11-29 08:00:00"},
        {"issued_at": 1764403200},
        {"expires_at": "2026-11-29T08:00:30"},
        {"nonce": "short"},
        {"signature": "not base64!"},
        {"extra": 1},
        {"id": ""},
    ],
)
def test_schema_and_model_refuse_bad_envelopes(change: dict[str, Any]) -> None:
    request = {**_request("open", {"gate": "gate-1", "direction": "entry"}), **change}
    with pytest.raises(SchemaViolation):
        validate(request, REQUEST_SCHEMA)
    with pytest.raises(ValueError):
        CommandRequest.model_validate(request)


def test_reply_model_matches_its_schema() -> None:
    for reply in (
        CommandReply(id="r1", name="open", result="ok", code="ok", message="done", data={"gate": "g"}),
        CommandReply(id=None, name="open", result="refused", code="malformed", message="not JSON"),
    ):
        validate(reply.model_dump(), REPLY_SCHEMA)
    with pytest.raises(SchemaViolation):
        validate(
            {"id": "r", "name": "open", "result": "maybe", "code": "ok", "message": "", "data": {}},
            REPLY_SCHEMA,
        )


def test_the_documented_python_signer_produces_commands_the_gateway_accepts() -> None:
    """The snippet of COMMANDS.md 'Signing in Python', run as printed."""
    block = (
        DOC.read_text().split("### Signing in Python (the centre)")[1].split("```python\n")[1].split("```")[0]
    )
    namespace: dict[str, Any] = {}
    exec(block, namespace)  # our own documentation, run as printed
    ed = Ed25519PrivateKey.from_private_bytes(EXAMPLE_ED_SEED)
    args = {"gate": "gate-1", "direction": "entry"}
    keys = parse_trusted_keys(example_keys())
    for key_id, kwargs in (
        ("centre-2026a", {"ed25519": ed}),
        ("ops-hmac-1", {"hmac_secret": EXAMPLE_HMAC_SECRET}),
    ):
        body = json.loads(namespace["signed_command"](EXAMPLE_TOPIC, "open", args, key_id, **kwargs))
        validate(body, REQUEST_SCHEMA)
        CommandRequest.model_validate(body)
        assert keys[key_id].verify(base64.b64decode(body["signature"]), signing_input(EXAMPLE_TOPIC, body))

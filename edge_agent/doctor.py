"""``edge-agent doctor``: check that this box can run the agent, one line per check.

Each check is a small function returning :class:`CheckResult` (or a list of them, one per device),
so tests and the local API can run them one by one; :func:`run_doctor` runs them all in order and
the CLI prints them and exits non-zero when any failed. Checks only look: they open ports and files
read-only where they can, connect to the broker under a client id of their own, and never touch
the agent's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import ssl
import stat
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from device_drivers import (
    FAMILIES,
    CameraConfig,
    CardReaderConfig,
    DeviceError,
    GpioWiegandConfig,
    KeyboardWedgeConfig,
    OsdpBusConfig,
    RelayDoorConfig,
    TurnstileConfig,
    bound_allocations,
    load_profile,
    load_secret,
    parse_comm_key,
    parse_source,
    redact_url,
    resolve_profile,
)
from edge_agent.commands import parse_trusted_keys
from edge_agent.config import ConfigFileError, GatewayConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.face_templates import FACES_DB, key_opens, parse_key
from edge_agent.install import CREDENTIALS_DIR, needed_credentials, where_to_put
from edge_agent.roster_sync import parse_roster_keys
from edge_agent.secrets import read_credential
from sync import STORES, OutboxConfig, TlsConfig, parse_broker_url
from vision import MANIFEST_PATH, ManifestError, load_manifest

DEFAULT_DATA_DIR = "/var/lib/edge-agent"
# Every SQLite file the agent keeps in its data dir; each is checked when present.
DATABASES = tuple(spec.file for spec in STORES.values())
STATUS_FILE = "status.json"
# The agent rewrites status.json every 2 s; older than this and it is not running (or stuck).
STATUS_STALE_S = 10.0
CLOCK_COMMAND = ("timedatectl", "show", "-p", "NTPSynchronized", "--value")


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``name`` says what was checked, ``detail`` what was found."""

    name: str
    status: Status
    detail: str

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.name:<28} {self.detail}"


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def _warn(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.WARN, detail)


def _fail(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- configuration -------------------------------------------------------------------------------


def check_config(path: str | os.PathLike[str]) -> tuple[CheckResult, GatewayConfig | None]:
    """Load and validate the configuration file; on errors, every one with its YAML line."""
    try:
        config = load_config(path)
    except ConfigFileError as err:
        issues = "; ".join(i.located(err.source) for i in err.issues)
        return _fail("config", issues), None
    return _ok("config", f"{path}: site {config.gateway.site}, gateway {config.gateway.id}"), config


def apply_overrides(config: GatewayConfig, data_dir: str | None, mqtt_url: str | None) -> GatewayConfig:
    """The precedence ``edge-agent run`` uses: command line, then environment, then the YAML."""
    url = mqtt_url or os.environ.get("EDGE_AGENT_MQTT_URL")
    directory = data_dir or os.environ.get("EDGE_AGENT_DATA_DIR")
    if url:
        try:
            parse_broker_url(url)
        except ValueError as err:
            raise ConfigError(str(err), code="bad_override") from err
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"url": url})})
    if directory:
        config = config.model_copy(update={"agent": config.agent.model_copy(update={"data_dir": directory})})
    return config


# -- data directory --------------------------------------------------------------------------------


def check_data_dir(data_dir: Path, outbox: OutboxConfig) -> CheckResult:
    """The data dir exists and is writable (a real file is created and removed), and its file
    system has more free space than the outbox's free-space floor on that file system."""
    try:
        return _check_data_dir(data_dir, outbox)
    except OSError as err:
        # e.g. a parent directory the user cannot traverse
        return _fail("data dir", f"{data_dir}: {err.strerror or err}")


def _check_data_dir(data_dir: Path, outbox: OutboxConfig) -> CheckResult:
    name = "data dir"
    probe_dir = data_dir
    if not data_dir.exists():
        # The agent (or systemd's StateDirectory=) creates it; what matters is that it can.
        probe_dir = next((p for p in data_dir.parents if p.exists()), Path("/"))
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            return _fail(name, f"{data_dir} does not exist and {probe_dir} is not writable")
    elif not data_dir.is_dir():
        return _fail(name, f"{data_dir} is not a directory")
    else:
        try:
            with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-", delete=True) as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            return _fail(name, f"{data_dir} is not writable: {err.strerror or err}")
    usage = shutil.disk_usage(probe_dir)
    free = usage.free
    # The floor the outbox will enforce here: relative to this file system's size (OutboxConfig).
    min_free_bytes = outbox.limits(usage.total).min_free_bytes
    where = f"{data_dir}" if probe_dir == data_dir else f"{data_dir} (not created yet)"
    if free < min_free_bytes:
        return _fail(
            name,
            f"{where}: {_size(free)} free, below the outbox's free-space floor {_size(min_free_bytes)}; "
            "the outbox starts dropping old rows",
        )
    if free < 2 * min_free_bytes:
        return _warn(name, f"{where}: {_size(free)} free, close to the floor of {_size(min_free_bytes)}")
    return _ok(name, f"{where}: writable, {_size(free)} free (floor {_size(min_free_bytes)})")


# -- devices ---------------------------------------------------------------------------------------


def check_serial_port(device_id: str, port: str, baudrate: int = 9600) -> CheckResult:
    """Open the pyserial port URL and close it again.

    The agent opens its ports exclusively (flock), so does this check: a port the running agent
    holds is reported as in use (a warning), not as broken. The port is not read, so no byte meant
    for anyone else is consumed.
    """
    name = f"device {device_id}"
    try:
        port_obj = serial.serial_for_url(port, baudrate=baudrate, do_not_open=True, timeout=0)
        if hasattr(port_obj, "exclusive"):
            port_obj.exclusive = True
        port_obj.open()
        port_obj.close()
    except (serial.SerialException, OSError, ValueError) as err:
        hint = ""
        text = str(err)
        if "exclusively lock" in text:
            return _warn(name, f"{port} is in use by another process (the running agent?)")
        if "Permission denied" in text or "[Errno 13]" in text:
            hint = " (is the user in the 'dialout' group?)"
        elif "No such file" in text or "[Errno 2]" in text:
            hint = " (unplugged? prefer a stable /dev/serial/by-id/ path)"
        return _fail(name, f"cannot open {port}: {text}{hint}")
    return _ok(name, f"{port} opens")


def check_device_node(device_id: str, path: str, write: bool) -> CheckResult:
    """A GPIO chip or input device: it exists, is a character device, and opens."""
    name = f"device {device_id}"
    try:
        st = os.stat(path)
    except OSError as err:
        return _fail(name, f"{path}: {err.strerror}")
    if not stat.S_ISCHR(st.st_mode):
        return _fail(name, f"{path} is not a character device")
    try:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        group = "gpio" if write else "input"
        return _fail(name, f"cannot open {path}: {err.strerror} (is the user in the '{group}' group?)")
    os.close(fd)
    return _ok(name, f"{path} opens")


def check_devices(config: GatewayConfig) -> list[CheckResult]:
    """One result per configured device; simulated devices are skipped (and say so)."""
    results: list[CheckResult] = []
    for device in config.devices:
        if getattr(device, "simulated", False):
            results.append(_ok(f"device {device.id}", "simulated: true, no hardware to check"))
            continue
        if isinstance(device, CardReaderConfig | TurnstileConfig):
            assert device.port is not None  # the model refuses a real device without a port
            baud = load_profile(resolve_profile(device.profile)).transport.baudrate
            results.append(check_serial_port(device.id, device.port, baud))
        elif isinstance(device, OsdpBusConfig):
            assert device.port is not None
            results.append(check_serial_port(device.id, device.port, device.baudrate))
        elif isinstance(device, RelayDoorConfig | GpioWiegandConfig):
            results.append(check_device_node(device.id, device.chip, write=True))
        elif isinstance(device, KeyboardWedgeConfig):
            results.append(check_device_node(device.id, device.device, write=False))
    return results


@contextlib.contextmanager
def _credentials_from(credentials_dir: Path | None) -> Iterator[None]:
    # Drivers read their passwords where the service finds them ($CREDENTIALS_DIRECTORY); doctor,
    # run by hand, points that at the credentials directory for the length of the probe.
    if credentials_dir is None:
        yield
        return
    before = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(credentials_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = before


def probe_network_devices(config: GatewayConfig, credentials_dir: Path | None = None) -> list[CheckResult]:
    """Each real network device's own probe (device_drivers registry): reachable, logged in,
    clock skew... one line per thing it checked; a probe that raises is a failure saying why."""
    results: list[CheckResult] = []
    status = {"ok": Status.OK, "warn": Status.WARN, "fail": Status.FAIL}
    for device in config.devices:
        probe = FAMILIES[device.kind].probe
        if probe is None or getattr(device, "simulated", False):
            continue
        try:
            with _credentials_from(credentials_dir):
                found = asyncio.run(probe(device))
        except Exception as err:  # a probe's bug or an unexpected answer: say it, do not crash doctor
            results.append(_fail(f"device {device.id}", f"probe failed: {type(err).__name__}: {err}"))
            continue
        results += [CheckResult(f"device {device.id} {r.check}", status[r.status], r.detail) for r in found]
    return results


def check_camera(camera_id: str, url: str, timeout_s: float = 10.0) -> CheckResult:
    """Open a camera source with OpenCV and grab one frame (RTSP/HTTP URL, ``usb:N``, a file)."""
    name = f"camera {camera_id}"
    shown = redact_url(url)
    try:
        kind, target = parse_source(url)
    except ValueError as err:
        return _fail(name, str(err))
    if kind == "file" and not Path(str(target)).is_file():
        return _fail(name, f"{shown}: no such file")
    import cv2

    result: list[CheckResult] = []

    def grab() -> None:
        cap = cv2.VideoCapture(target)
        try:
            if not cap.isOpened():
                result.append(_fail(name, f"cannot open {shown}"))
                return
            ok, frame = cap.read()
            if not ok or frame is None:
                result.append(_fail(name, f"{shown} opened but gave no frame"))
                return
            height, width = frame.shape[:2]
            result.append(_ok(name, f"{shown}: {width}x{height}"))
        finally:
            cap.release()

    # OpenCV has no timeout for every backend; a dead RTSP server must not hang the doctor.
    worker = threading.Thread(target=grab, name=f"doctor-camera-{camera_id}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        return _fail(name, f"{shown}: no frame within {timeout_s:.0f}s")
    return result[0]


def check_cameras(config: GatewayConfig) -> list[CheckResult]:
    results = []
    real = [setup.device for setup in config.cameras if isinstance(setup.device, CameraConfig)]
    # Bounded before any camera is opened: the doctor's own reads are then as safe as the agent's.
    bound = check_allocation_bound(max(c.max_frame_pixels for c in real)) if real else None
    for setup in config.cameras:
        device = setup.device
        if isinstance(device, CameraConfig):
            results.append(check_camera(device.id, device.analysis_url))
        else:
            results.append(CheckResult(f"camera {device.id}", Status.OK, "simulated; nothing to open"))
    if bound is not None:
        results.append(bound)
    return results


def check_allocation_bound(max_frame_pixels: int) -> CheckResult:
    """Whether FFmpeg's single allocations can be bounded here (device_drivers.camera.ffmpeg_limits):
    without it, a camera that never ends a frame is buffered until its read times out."""
    bound = bound_allocations(max_frame_pixels)
    if bound is None:
        return CheckResult(
            "camera allocation bound",
            Status.WARN,
            "FFmpeg's allocations cannot be bounded here (the log says why): a camera that never ends "
            "a frame is buffered until its read timeout",
        )
    return CheckResult(
        "camera allocation bound", Status.OK, f"FFmpeg allocates at most {bound >> 20} MiB a block"
    )


# -- credentials -----------------------------------------------------------------------------------


def _validate_credential(config: GatewayConfig, name: str, text: str) -> str:
    """What a present credential holds, in a few words; raises ConfigError when the agent cannot use it."""
    if name == config.faces.template_key_credential and any(c.face for c in config.cameras):
        digits = text.strip()
        if len(digits) != 64 and all(c in string.hexdigits for c in digits):
            # parse_key would read it as base64 and call it neither; say what is actually wrong.
            raise ConfigError(f"{len(digits)} hex digits; the key is 64 (32 bytes)", code="template_key_bad")
        parse_key(text, name)
        return "a 32-byte template key"
    if name == config.api.tokens_credential and config.api.enabled:
        from edge_agent.api.auth import TokenTable  # loads the API package, heavy; only this check needs it

        tokens = TokenTable.parse(text)
        if not len(tokens):
            raise ConfigError("no 'role:token' line in it: the API would refuse every request", code="empty")
        return f"{len(tokens)} API token(s)"
    if name == config.commands.keys_credential and config.commands.enabled:
        keys = parse_trusted_keys(text)
        if not keys:
            raise ConfigError("its key list is empty: every command would be refused", code="empty")
        return f"{len(keys)} trusted key(s): {', '.join(sorted(keys))}"
    if name == config.agent.roster_keys_credential and config.agent.roster_signatures == "required":
        keys = parse_roster_keys(text)
        if not keys:
            raise ConfigError("its key list is empty: every roster message would be refused", code="empty")
        return f"{len(keys)} roster signing key(s): {', '.join(sorted(keys))}"
    if config.mqtt.tls is not None and name == config.mqtt.tls.key_credential:
        if "PRIVATE KEY-----" not in text:
            raise ConfigError("not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----')", code="bad_pem")
        return "a PEM private key"
    if any(d.kind == "zkteco" and getattr(d, "password_credential", None) == name for d in config.devices):
        try:
            parse_comm_key(text)
        except ValueError as err:
            raise ConfigError(str(err), code="bad_key") from None
        return "a ZKTeco comm key"
    return f"{len(text)} characters"


def check_credentials(config: GatewayConfig, credentials_dir: Path | None = None) -> list[CheckResult]:
    """Every credential ``config`` needs (install's :func:`needed_credentials`): present, and in
    the form the agent reads (a valid template key, token lines, trusted keys, a PEM key).

    A missing one is a failure that says what it is for, where to put it and how to make it; the
    API tokens alone are a warning, because an agent without them still runs its gates (the API
    then answers only /health, /ready and /metrics). OSDP reader keys are :func:`check_osdp_keys`.
    """
    osdp_secrets = {
        reader.scbk_secret
        for bus in config.devices
        if isinstance(bus, OsdpBusConfig)
        for reader in bus.readers
        if reader.scbk_secret
    }
    tls_key = config.mqtt.tls.key_credential if config.mqtt.tls is not None else None
    results: list[CheckResult] = []
    for need in needed_credentials(config):
        if need.name in osdp_secrets:
            continue
        name = f"credential {need.name}"
        file_only = need.name == tls_key  # the TLS library reads the key from a file
        if file_only:
            path = credential_file(need.name, credentials_dir)
            text = Path(path).read_text() if path is not None else None
        else:
            text = credential_value(need.name, credentials_dir)
        if text is None and _credentials_hidden_from_us(credentials_dir):
            # Run as the service user the root-only directory cannot be read: "missing" would be a
            # lie about a file that may well be there.
            results.append(
                _warn(
                    name,
                    f"not checked: {CREDENTIALS_DIR} is readable by root only (the service gets its "
                    f"files through LoadCredential=); run doctor as root to check {need.name}",
                )
            )
            continue
        if not text or not text.strip():
            state = "missing" if text is None else "empty"
            missing = _warn if need.name == config.api.tokens_credential else _fail
            results.append(
                missing(
                    name,
                    f"{state}: {need.why}. {where_to_put(need.name, file_only=file_only)}; e.g. {need.how}",
                )
            )
            continue
        try:
            what = _validate_credential(config, need.name, text)
        except ConfigError as err:
            results.append(_fail(name, f"present but unusable: {err}. Fix it: {need.how}"))
            continue
        results.append(_ok(name, what))
    return results


def check_face_key(
    config: GatewayConfig, data_dir: Path, credentials_dir: Path | None = None
) -> list[CheckResult]:
    """Whether the face template key opens the gallery in ``data_dir`` (read only): a key that does
    not is refused by the agent at start (face recognition off) and by ``enroll``; say so before.
    Nothing to say without cameras doing faces, a gallery, or a readable, well-formed key (the
    credentials check reports those)."""
    name = config.faces.template_key_credential
    gallery = data_dir / FACES_DB
    if not any(c.face for c in config.cameras) or not gallery.exists():
        return []
    try:
        key = parse_key(credential_value(name, credentials_dir), name)
    except ConfigError:
        return []
    check = "face template key"
    try:
        conn = sqlite3.connect(f"file:{gallery}?mode=ro", uri=True, timeout=5)
        try:
            opens = key_opens(conn, AESGCM(key))
        finally:
            conn.close()
    except sqlite3.Error as err:
        return [_fail(check, f"{gallery}: cannot read: {err}")]
    if opens is False:
        return [
            _fail(
                check,
                f"the {name!r} credential does not open the gallery in {gallery} (made under another key): "
                "face recognition would stay off and enroll would refuse. Put the gallery's key back, or "
                "change keys with `edge-agent faces rotate-key`",
            )
        ]
    return [_ok(check, "opens the gallery" if opens else "no template yet: any key is taken")]


# -- broker ----------------------------------------------------------------------------------------


def _credentials_hidden_from_us(credentials_dir: Path | None) -> bool:
    """True when the credentials directory exists but this user cannot read it (doctor run as the
    service user from a shell: systemd hands the service its files, a shell gets nothing)."""
    if credentials_dir is not None or os.environ.get("CREDENTIALS_DIRECTORY"):
        return False
    directory = Path(CREDENTIALS_DIR)
    return directory.exists() and not os.access(directory, os.R_OK | os.X_OK)


def credential_value(name: str, credentials_dir: Path | None = None) -> str | None:
    """A credential as the service will see it: from ``credentials_dir`` when given (the files
    install-service set up, for a doctor run from a shell), else as the agent reads it."""
    if credentials_dir is not None:
        try:
            return (credentials_dir / name).read_text().rstrip("\r\n")
        except FileNotFoundError:
            return None
    return read_credential(name)


def credential_file(name: str, credentials_dir: Path | None = None) -> str | None:
    directory = credentials_dir or (
        Path(os.environ["CREDENTIALS_DIRECTORY"]) if os.environ.get("CREDENTIALS_DIRECTORY") else None
    )
    if directory is not None and (directory / name).is_file() and (directory / name).stat().st_size > 0:
        return str(directory / name)
    return None


def check_osdp_keys(config: GatewayConfig, credentials_dir: Path | None = None) -> list[CheckResult]:
    """Each OSDP reader on a secure-channel bus has its SCBK secret: 16 bytes as 32 hex digits.

    Under systemd each needs its own ``LoadCredential=`` line (a drop-in); a missing one keeps the
    reader offline, which the agent only logs."""
    results = []
    for bus in config.devices:
        if not isinstance(bus, OsdpBusConfig) or bus.simulated or not bus.secure_channel:
            continue
        for reader in bus.readers:
            name = f"osdp key {reader.id}"
            secret = reader.scbk_secret
            assert secret is not None  # the model requires it with the secure channel
            try:
                if credentials_dir is not None:
                    path = credentials_dir / secret
                    if not path.is_file():
                        raise DeviceError(f"secret {secret} not found in {credentials_dir}", code="no_key")
                    key = bytes.fromhex(path.read_text().strip())
                    if len(key) != 16:
                        raise DeviceError(
                            f"secret {secret} holds {len(key)} bytes, an SCBK has 16", code="bad_key"
                        )
                else:
                    load_secret(secret)
            except ValueError:
                results.append(_fail(name, f"secret {secret} is not hex"))
            except DeviceError as err:
                results.append(_fail(name, str(err)))
            else:
                results.append(_ok(name, f"secret {secret}: a 16-byte key"))
    return results


def _tls_context(tls: TlsConfig, key_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
    return context


def check_broker_tcp(url: str, timeout_s: float = 5.0) -> CheckResult:
    """A TCP connection to the broker's host and port."""
    addr = parse_broker_url(url)
    start = time.monotonic()
    try:
        with socket.create_connection((addr.host, addr.port), timeout=timeout_s):
            pass
    except OSError as err:
        return _fail("broker reachable", f"{addr.host}:{addr.port}: {err.strerror or err}")
    ms = (time.monotonic() - start) * 1000
    return _ok("broker reachable", f"{addr.host}:{addr.port} ({ms:.0f} ms)")


def check_broker_tls(
    url: str, tls: TlsConfig | None, key_file: str | None = None, timeout_s: float = 5.0
) -> CheckResult:
    """The TLS handshake as the agent does it (CA, client certificate, host name)."""
    addr = parse_broker_url(url)
    name = "broker TLS"
    try:
        context = _tls_context(tls or TlsConfig(), key_file)
    except (OSError, ssl.SSLError) as err:
        return _fail(name, f"cannot load the TLS files: {err}")
    try:
        with (
            socket.create_connection((addr.host, addr.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=addr.host) as tls_sock,
        ):
            cert = tls_sock.getpeercert() or {}
            version = tls_sock.version()
            # With TLS 1.3 the server judges our certificate after the handshake has completed on
            # our side; its refusal arrives as an alert on the first read. A broker sends nothing
            # before CONNECT, so a quiet socket means the session was accepted.
            tls_sock.settimeout(0.5)
            try:
                if tls_sock.recv(1) == b"":
                    return _fail(name, f"{addr.host}:{addr.port}: closed right after the handshake")
            except TimeoutError:
                pass
    except ssl.SSLCertVerificationError as err:
        return _fail(name, f"{addr.host}:{addr.port}: the broker's certificate: {err.verify_message}")
    except (OSError, ssl.SSLError) as err:
        return _fail(name, f"{addr.host}:{addr.port}: handshake failed: {err}")
    expires = cert.get("notAfter", "?")
    return _ok(name, f"{version}, certificate valid until {expires}")


def check_broker_auth(
    config: GatewayConfig,
    password: str | None,
    key_file: str | None = None,
    timeout_s: float = 10.0,
) -> CheckResult:
    """CONNECT with the agent's user name and password and wait for CONNACK.

    The client id is the agent's with ``-doctor`` appended: the agent's own would make the broker
    drop the running agent's session. A refused CONNACK is a failure with the broker's reason.
    """
    mqtt = config.mqtt
    name = "broker auth"
    if mqtt.username and not password:
        return _fail(
            name,
            f"user {mqtt.username!r} needs a password, but credential {mqtt.password_credential!r} is "
            "missing or empty",
        )
    addr = parse_broker_url(mqtt.url)
    base = mqtt.client_id or f"{config.gateway.site}-{config.gateway.id}"
    client_id = f"{base}-doctor-{os.getpid()}"
    protocols = (
        [MQTTProtocolVersion.MQTTv311]
        if mqtt.protocol == "3.1.1"
        else [MQTTProtocolVersion.MQTTv5]
        if mqtt.protocol == "5"
        else [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311]
    )
    outcome = "no attempt"
    for protocol in protocols:
        code, text = _connect_once(
            mqtt.url,
            addr.host,
            addr.port,
            addr.tls,
            client_id,
            protocol,
            config,
            password,
            key_file,
            timeout_s,
        )
        label = "MQTT 5" if protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1"
        if code == 0:
            who = f"user {mqtt.username!r}" if mqtt.username else "anonymous"
            return _ok(name, f"CONNACK accepted ({label}, {who})")
        outcome = f"{label}: {text}"
        # 1 / 0x84: this broker does not speak the version; None: it hung up on the CONNECT.
        if code not in (1, 0x84, None):
            break
    return _fail(name, f"broker refused the connection: {outcome}")


def _connect_once(
    url: str,
    host: str,
    port: int,
    use_tls: bool,
    client_id: str,
    protocol: MQTTProtocolVersion,
    config: GatewayConfig,
    password: str | None,
    key_file: str | None,
    timeout_s: float,
) -> tuple[int | None, str]:
    """One CONNECT; ``(reason code, text)``, code None when no CONNACK came."""
    result: list[tuple[int, str]] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        code = reason.value if isinstance(reason, ReasonCode) else int(reason)
        result.append((code, str(reason)))

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == MQTTProtocolVersion.MQTTv5 else True,
        reconnect_on_failure=False,
    )
    client.on_connect = on_connect
    if config.mqtt.username is not None:
        client.username_pw_set(config.mqtt.username, password)
    try:
        if use_tls:
            client.tls_set_context(_tls_context(config.mqtt.tls or TlsConfig(), key_file))
        client.connect(host, port, keepalive=max(5, int(timeout_s) * 2))
        deadline = time.monotonic() + timeout_s
        while not result and time.monotonic() < deadline:
            rc = client.loop(timeout=0.1)
            if rc != paho.MQTT_ERR_SUCCESS and not result:
                return None, f"connection closed before CONNACK ({paho.error_string(rc)})"
        if not result:
            return None, f"no CONNACK within {timeout_s:.0f}s"
        return result[0]
    except (OSError, ssl.SSLError) as err:
        return None, f"{url}: {err}"
    finally:
        # DISCONNECT when connected; the loop then writes it and closes the socket.
        client.disconnect()
        for _ in range(5):
            if client.socket() is None or client.loop(timeout=0.05) != paho.MQTT_ERR_SUCCESS:
                break


def check_broker(
    config: GatewayConfig, credentials_dir: Path | None = None, timeout_s: float = 5.0
) -> list[CheckResult]:
    """Reachable, then (for mqtts://) the TLS handshake, then CONNECT/CONNACK with the credentials."""
    mqtt = config.mqtt
    reach = check_broker_tcp(mqtt.url, timeout_s)
    if reach.failed:
        return [reach]
    results = [reach]
    key_file = None
    if mqtt.tls and mqtt.tls.key_credential:
        key_file = credential_file(mqtt.tls.key_credential, credentials_dir)
        if key_file is None:
            return [
                *results,
                _fail("broker TLS", f"client key credential {mqtt.tls.key_credential!r} is missing or empty"),
            ]
    if parse_broker_url(mqtt.url).tls:
        tls = check_broker_tls(mqtt.url, mqtt.tls, key_file, timeout_s)
        results.append(tls)
        if tls.failed:
            return results
    password = credential_value(mqtt.password_credential, credentials_dir) if mqtt.username else None
    results.append(check_broker_auth(config, password, key_file, timeout_s * 2))
    return results


# -- models, clock, databases, running agent --------------------------------------------------------


def check_models(manifest_path: Path | None = None, models_dir: Path | None = None) -> list[CheckResult]:
    """Every model in the vision manifest: present, the declared size, the declared sha256."""
    path = manifest_path or MANIFEST_PATH
    try:
        manifest = load_manifest(path)
    except ManifestError as err:
        return [_fail("models", str(err))]
    directory = models_dir or path.parent
    results = []
    for entry in manifest.models:
        name = f"model {entry.id}"
        file = directory / entry.file
        try:
            size = file.stat().st_size
            if size != entry.size_bytes:
                results.append(
                    _fail(name, f"{file}: {size} bytes, the manifest says {entry.size_bytes} (truncated?)")
                )
                continue
            with file.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as err:
            results.append(_fail(name, f"{file}: {err.strerror or err}"))
            continue
        if digest != entry.sha256:
            results.append(
                _fail(name, f"{file}: sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}…")
            )
        else:
            results.append(_ok(name, f"{entry.file}: sha256 matches ({entry.license})"))
    return results


def check_clock(command: Sequence[str] = CLOCK_COMMAND, timeout_s: float = 5.0) -> CheckResult:
    """Whether systemd-timesyncd/chrony have synchronised the clock (``timedatectl``).

    A wrong clock misplaces every event time, attendance session and validity window, and breaks
    TLS certificate checks, so "not synchronised" is a failure; "cannot tell" is a warning.
    """
    name = "clock sync"
    now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        out = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        return _warn(name, f"unknown ({command[0]}: {err}); clock says {now}")
    value = out.stdout.strip()
    if out.returncode != 0 or value not in ("yes", "no"):
        reason = (out.stderr.strip().splitlines() or [value or f"exit {out.returncode}"])[0]
        return _warn(name, f"unknown ({reason}); clock says {now}")
    if value == "no":
        return _fail(name, f"NTP not synchronised; clock says {now} (see `timedatectl timesync-status`)")
    return _ok(name, f"NTP synchronised; {now}")


def check_database(path: Path) -> CheckResult:
    """``PRAGMA quick_check`` on one SQLite file, opened read-only; its migrations and backlog."""
    name = f"database {path.name}"
    if not path.exists():
        return _ok(name, "not created yet (first start)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as err:
        return _fail(name, f"{path}: cannot open: {err}")
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if rows != ["ok"]:
            return _fail(name, f"{path}: quick_check: {'; '.join(map(str, rows))}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        facts = []
        if "migrations" in tables:
            last = conn.execute("SELECT name FROM migrations ORDER BY applied_at DESC LIMIT 1").fetchone()
            count = conn.execute("SELECT count(*) FROM migrations").fetchone()[0]
            facts.append(f"{count} migrations, last {last[0] if last else '-'}")
        if path.name == "outbox.db" and "events" in tables:
            pending = conn.execute("SELECT count(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]
            facts.append(f"{pending} undelivered")
    except sqlite3.Error as err:
        return _fail(name, f"{path}: {err}")
    finally:
        conn.close()
    return _ok(name, "quick_check ok" + (f"; {', '.join(facts)}" if facts else ""))


def check_databases(data_dir: Path) -> list[CheckResult]:
    return [check_database(data_dir / db) for db in DATABASES if (data_dir / db).exists()] or [
        _ok("databases", f"none in {data_dir} yet (first start)")
    ]


def check_execution_providers(config: GatewayConfig, data_dir: Path) -> CheckResult:
    """Which ONNX Runtime execution provider the models will run on (the configured order against
    this onnxruntime build), and, when an agent runs with this data dir, which each model runs on."""
    from vision import provider_plan  # loads onnxruntime; only this check needs it

    name = "execution providers"
    preferred = config.vision.execution_providers
    chosen, missing = provider_plan(preferred)
    running = ""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        models = json.loads((data_dir / STATUS_FILE).read_text()).get("vision", {}).get("models", [])
        if models:
            running = "; the running agent: " + ", ".join(f"{m['model']} on {m['provider']}" for m in models)
    detail = f"models run on {chosen[0]} (configured: {', '.join(preferred)}){running}"
    if missing:
        return _warn(name, f"{', '.join(missing)} not in this onnxruntime build: {detail}")
    return _ok(name, detail)


def check_agent_status(data_dir: Path, now: float | None = None) -> CheckResult:
    """Whether an agent is writing ``status.json`` in this data dir, and what it says."""
    name = "running agent"
    path = data_dir / STATUS_FILE
    try:
        age = (now if now is not None else time.time()) - path.stat().st_mtime
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return _warn(name, f"no {STATUS_FILE} in {data_dir}: the agent has not run with this data dir")
    except (OSError, ValueError) as err:
        return _warn(name, f"{path}: {err}")
    broker = status.get("broker", {}).get("state", "?")
    backlog = status.get("outbox", {}).get("pending", "?")
    if age > STATUS_STALE_S:
        return _warn(name, f"not running: {STATUS_FILE} is {age:.0f}s old (backlog then: {backlog})")
    return _ok(name, f"pid {status.get('pid', '?')}, broker {broker}, backlog {backlog}")


OPEN_FILES_FIXED = 56
"""Descriptors an agent holds whatever its devices: the process, its loop, MQTT and the API's listener
(16), the SQLite stores (32), short-lived ones (8). docs/OPERATIONS.md, "API connection limits and open
files", has the count; a serial device takes up to 5 (pyserial's port and pipes), a camera up to 4."""
SELECT_LIMIT = 1024
"""pyserial waits on its ports with select(), which fails for descriptor numbers from here on."""


def open_files_needed(config: GatewayConfig) -> int:
    """The most descriptors the agent can hold with ``config``: the API at its cap plus an accept burst."""
    from edge_agent.api.server import LISTEN_BACKLOG  # the API server is heavy; only this check needs it

    devices = 5 * len(config.devices) + 4 * len(config.cameras)
    return OPEN_FILES_FIXED + devices + config.api.max_connections + 4 * LISTEN_BACKLOG


def check_open_files(config: GatewayConfig, data_dir: Path) -> CheckResult:
    """The running agent's open files and their limit (``LimitNOFILE``) against what ``config`` needs."""
    name = "open files"
    needed = open_files_needed(config)
    try:
        pid = int(json.loads((data_dir / STATUS_FILE).read_text())["pid"])
        if b"edge" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            raise ProcessLookupError(f"pid {pid} is not the agent")
        held = len(os.listdir(f"/proc/{pid}/fd"))
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except (OSError, ValueError, KeyError, TypeError) as err:
        return _warn(name, f"cannot see a running agent ({err}); this configuration needs up to {needed}")
    soft = next(line.split()[3] for line in limits if line.startswith("Max open files"))
    limit = SELECT_LIMIT + 1 if soft == "unlimited" else int(soft)
    detail = f"pid {pid} holds {held} of its limit {soft}; this configuration needs up to {needed}"
    if limit < needed:
        return _fail(name, f"{detail}: raise LimitNOFILE or lower api.max_connections")
    if limit > SELECT_LIMIT:
        return _warn(name, f"{detail}: above {SELECT_LIMIT}, pyserial's select() fails on a port opened late")
    if held > limit // 2:
        return _warn(name, f"{detail}: more than half in use")
    return _ok(name, detail)


# -- all of them -----------------------------------------------------------------------------------


def run_doctor(
    config_path: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    mqtt_url: str | None = None,
    credentials_dir: Path | None = None,
    check_clock_command: Sequence[str] = CLOCK_COMMAND,
) -> list[CheckResult]:
    """Every check, in order; those that need the configuration are skipped when it is invalid."""
    config_result, config = check_config(config_path)
    results = [config_result]
    if config is not None:
        try:
            config = apply_overrides(config, data_dir, mqtt_url)
        except ConfigError as err:
            results.append(_fail("overrides", str(err)))
            config = None
    if config is not None:
        directory = Path(config.agent.data_dir)
        results.append(check_data_dir(directory, config.outbox))
        results.extend(check_databases(directory))
        results.append(check_agent_status(directory))
        results.append(check_open_files(config, directory))
        results.extend(check_devices(config))
        results.extend(probe_network_devices(config, credentials_dir))
        results.extend(check_osdp_keys(config, credentials_dir))
        results.extend(check_credentials(config, credentials_dir))
        results.extend(check_face_key(config, directory, credentials_dir))
        results.extend(check_cameras(config))
        if config.cameras:
            results.append(check_execution_providers(config, directory))
        results.extend(check_broker(config, credentials_dir))
    results.extend(check_models())
    results.append(check_clock(check_clock_command))
    return results


def _default_credentials_dir() -> Path | None:
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return None  # running under systemd: read_credential finds them
    directory = Path(CREDENTIALS_DIR)
    return directory if os.access(directory, os.R_OK | os.X_OK) else None


def cmd_doctor(args: argparse.Namespace) -> int:
    credentials_dir = Path(args.credentials_dir) if args.credentials_dir else _default_credentials_dir()
    results = run_doctor(
        args.config, data_dir=args.data_dir, mqtt_url=args.mqtt_url, credentials_dir=credentials_dir
    )
    for result in results:
        print(result.line())
    failed = [r for r in results if r.failed]
    warned = sum(r.status is Status.WARN for r in results)
    summary = f"{len(results)} checks: {len(failed)} failed, {warned} warnings"
    print(summary, file=sys.stderr)
    return 1 if failed else 0


def add_doctor_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent doctor`` on the CLI's subparsers (the handler is ``args.func``)."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check config, devices, broker, disk, models and clock; exit 1 when something is wrong",
        description="One line per check (ok / warn / FAIL). Run it as the service user "
        "(sudo -u edge-agent) to check the permissions the service will have.",
    )
    doctor.add_argument("--config", default="/etc/edge-agent/gateway.yaml", help="configuration file (YAML)")
    doctor.add_argument("--data-dir", help="the agent's data dir; env EDGE_AGENT_DATA_DIR")
    doctor.add_argument("--mqtt-url", help="broker URL to check instead; env EDGE_AGENT_MQTT_URL")
    doctor.add_argument(
        "--credentials-dir",
        help="where the secrets are (default: $CREDENTIALS_DIRECTORY, else /etc/edge-agent/credentials "
        "when readable, else the EDGE_AGENT_* environment)",
    )
    doctor.set_defaults(func=cmd_doctor)


__all__ = [
    "CheckResult",
    "Status",
    "add_doctor_cli",
    "check_agent_status",
    "check_broker",
    "check_broker_auth",
    "check_broker_tcp",
    "check_broker_tls",
    "check_camera",
    "check_clock",
    "check_config",
    "check_credentials",
    "check_data_dir",
    "check_database",
    "check_databases",
    "check_device_node",
    "check_devices",
    "check_models",
    "check_open_files",
    "check_osdp_keys",
    "check_serial_port",
    "cmd_doctor",
    "run_doctor",
]

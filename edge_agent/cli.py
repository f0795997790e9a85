"""The ``edge-agent`` command: a thin layer over the library (STYLE.md: thin edges)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.config import (
    ConfigFileError,
    GatewayConfig,
    config_json_schema,
    load_config,
    pending_marker,
    restore_previous_config,
)
from edge_agent.doctor import add_doctor_cli
from edge_agent.errors import ConfigError
from edge_agent.install import add_install_cli
from edge_agent.logs import setup_logging
from edge_agent.memory import limit_malloc_arenas
from edge_agent.resources import project_file
from edge_agent.secrets import credential_env_name, read_credential
from sync import parse_broker_url

if TYPE_CHECKING:
    from edge_agent.alerts import AlertBook
    from edge_agent.attendance import AttendanceBook
    from edge_agent.face_templates import FaceTemplateStore
    from edge_agent.roster import Roster

log = logging.getLogger("edge_agent")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2


class BadOverride(ConfigError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_override")


def _apply_overrides(config: GatewayConfig, mqtt_url: str | None, data_dir: str | None) -> GatewayConfig:
    """Command line beats environment beats YAML, for the settings operators and tests override."""
    url = mqtt_url or os.environ.get("EDGE_AGENT_MQTT_URL")
    directory = data_dir or os.environ.get("EDGE_AGENT_DATA_DIR")
    if url:
        try:
            parse_broker_url(url)
        except ValueError as err:
            raise BadOverride(str(err)) from err
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"url": url})})
    if directory:
        config = config.model_copy(update={"agent": config.agent.model_copy(update={"data_dir": directory})})
    return config


def _load(path: str) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigFileError as err:
        print(err, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, args.mqtt_url, args.data_dir)
    return run_agent(config, Path(args.config))


def run_agent(config: GatewayConfig, config_path: Path | None) -> int:
    # Imported here, not at the top: `config check` and `status` should not load models and drivers.
    from edge_agent.gateway import Gateway

    setup_logging(config.agent.log_level)
    gateway = Gateway(config, data_dir=Path(config.agent.data_dir), config_path=config_path)
    try:
        return asyncio.run(gateway.run())
    except Exception:
        # A pushed configuration on probation that crashes the agent is not kept either.
        if config_path is not None and pending_marker(config_path).exists():
            restored = restore_previous_config(config_path)
            pending_marker(config_path).unlink(missing_ok=True)
            log.critical(
                "the agent crashed on a pushed configuration; %s at %s",
                "the previous file is back" if restored else "no previous file that loads, so it stays",
                config_path,
            )
        raise


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return EXIT_BAD_CONFIG
    print(f"{args.file}: ok (site {config.gateway.site}, gateway {config.gateway.id})")
    return EXIT_OK


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    directory = args.data_dir or os.environ.get("EDGE_AGENT_DATA_DIR") or "/var/lib/edge-agent"
    path = Path(directory) / "status.json"
    try:
        print(path.read_text())
    except FileNotFoundError:
        print(
            f"edge-agent: no status in {directory} (is the agent running with this data dir?)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _broker_reachable(url: str) -> bool:
    addr = parse_broker_url(url)
    try:
        with socket.create_connection((addr.host, addr.port), timeout=1.0):
            return True
    except OSError:
        return False


def _start_demo_broker() -> tuple[subprocess.Popen[bytes], int, Path]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        raise SystemExit(
            "edge-agent demo: no broker reachable and no mosquitto binary; install the 'mosquitto' package"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-broker-"))
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if _broker_reachable(f"mqtt://127.0.0.1:{port}"):
            return proc, port, workdir
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("edge-agent demo: the demo broker did not start")


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo: its clips, face key and enrolled students prepared (edge_agent.demo), a local broker
    when none answers, a throwaway console token, then the agent."""
    from edge_agent.demo import prepare_demo

    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, args.mqtt_url, args.data_dir)
    if args.api_port is not None:
        config = config.model_copy(update={"api": config.api.model_copy(update={"port": args.api_port})})
    setup_logging(config.agent.log_level)
    try:
        config = prepare_demo(config, Path(args.config), real_schedules=args.real_schedules)
    except (OSError, sqlite3.Error) as err:
        # A full or read-only data dir: say where, instead of a traceback.
        print(f"edge-agent demo: cannot prepare the demo in {config.agent.data_dir}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    broker = None
    if not _broker_reachable(config.mqtt.url):
        broker, port, workdir = _start_demo_broker()
        url = f"mqtt://127.0.0.1:{port}"
        print(
            f"edge-agent demo: no broker at {config.mqtt.url}; started a local Mosquitto at {url}",
            file=sys.stderr,
        )
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"url": url})})
    addr = parse_broker_url(config.mqtt.url)
    prefix = config.mqtt.topic_prefix
    console = ""
    tokens_env = credential_env_name(config.api.tokens_credential)
    if config.api.enabled:
        if not read_credential(config.api.tokens_credential):
            # A throwaway operator token for this demo run only; real gateways get theirs from credentials.
            os.environ[tokens_env] = f"operator:{secrets.token_urlsafe(16)}:demo"
        token = (read_credential(config.api.tokens_credential) or "").splitlines()[0].split(":")[1]
        console = f"  console: http://{config.api.host}:{config.api.port}/console/  (token {token})\n"
    print(
        "edge-agent demo: watch the gateway with\n"
        f"  mosquitto_sub -h {addr.host} -p {addr.port} -t '{prefix}/#' -v\n"
        f"  edge-agent status --data-dir {config.agent.data_dir}\n"
        f"{console}"
        "Stop with Ctrl-C.",
        file=sys.stderr,
    )
    try:
        return run_agent(config, Path(args.config))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
            shutil.rmtree(workdir, ignore_errors=True)


def _roster_ready(roster: Roster, config: GatewayConfig, config_path: Path) -> bool:
    """Whether the local roster has people to enroll faces for. Before the agent's first start it is
    empty: the configured roster seed is applied then, as the agent does at start; without one, say
    what to run first."""
    from edge_agent.roster_sync import seed_roster

    if roster.version > 0:
        return True
    seed = config.agent.roster_seed
    if seed is not None:
        asyncio.run(seed_roster(roster, seed, config_path))
        if roster.version > 0:
            print(f"applied the roster seed {seed} ({len(roster.index.persons)} people) to the empty roster")
            return True
        print(
            f"edge-agent enroll: the roster seed {seed} could not be applied (see the error above)",
            file=sys.stderr,
        )
        return False
    print(
        f"edge-agent enroll: the local roster in {roster.path.parent} is empty, so no one can be enrolled "
        "yet. Start the agent once with this configuration and data dir (`edge-agent run --config "
        f"{config_path}`) and wait for the roster from the centre (`edge-agent status` shows its version), "
        "or name a roster snapshot in agent.roster_seed; then enroll again.",
        file=sys.stderr,
    )
    return False


def _face_key(config: GatewayConfig, command: str) -> bytes | None:
    """The template key from the configured credential, or None after saying what is wrong."""
    from edge_agent.face_templates import TemplateKeyError, parse_key

    name = config.faces.template_key_credential
    try:
        return parse_key(read_credential(name), name)
    except TemplateKeyError as err:
        print(f"edge-agent {command}: {err}", file=sys.stderr)
        return None


def cmd_enroll(args: argparse.Namespace) -> int:
    """Enroll photos of one person into the local, encrypted template store."""

    from edge_agent.face_templates import FaceTemplateStore, TemplateKeyError
    from edge_agent.faces import EnrollOutcome, FaceService, Override, load_photos
    from edge_agent.roster import Roster

    if args.force and not (args.reason or "").strip():
        print("edge-agent enroll: --force needs --reason TEXT (it is audited)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, None, args.data_dir)
    setup_logging("warning")
    data_dir = Path(config.agent.data_dir)
    settings = config.faces
    key = _face_key(config, "enroll")
    if key is None:
        return EXIT_BAD_CONFIG
    data_dir.mkdir(parents=True, exist_ok=True)
    roster = Roster(data_dir)
    override = Override(args.reason.strip()) if args.force else None
    try:
        if not _roster_ready(roster, config, Path(args.config)):
            return EXIT_FAILURE
        photos, unreadable = load_photos([Path(p) for p in args.photos])
        try:
            store = FaceTemplateStore(data_dir, key)
        except TemplateKeyError as err:  # a key that does not open the gallery: nothing is stored
            print(f"edge-agent enroll: {err}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        try:
            # No photo to read: no reason to load the models.
            outcome = (
                FaceService(store, settings).enroll(args.person, photos, roster.index, override=override)
                if photos
                else EnrollOutcome(args.person)
            )
            # The agent publishes these as gateway.audit events at its next start or reload: every
            # template stored (the centre learns whom a gateway holds templates of, as from the
            # API's audit), and every override.
            audit = {"actor": getpass.getuser(), "role": "admin", "via": "cli", "target": args.person}
            if outcome.forced:
                codes = ", ".join(sorted({code for _, code, _ in outcome.forced}))
                store.queue_audit(
                    audit
                    | {
                        "action": "enroll_forced",
                        "result": "ok" if outcome.stored else "refused",
                        "reason": f"{args.reason.strip()} (overrode {codes}; "
                        f"{len(outcome.stored)} templates stored)"[:500],
                    }
                )
            elif outcome.stored:
                store.queue_audit(
                    audit
                    | {
                        "action": "enroll",
                        "result": "ok",
                        "reason": f"{len(outcome.stored)} stored, {len(outcome.rejected)} rejected",
                    }
                )
        finally:
            store.close()
    finally:
        roster.close()
    outcome.rejected[:0] = unreadable
    for template_id in outcome.stored:
        print(f"stored template {template_id} for {args.person}")
    for name, code, message in outcome.rejected:
        print(f"rejected {name}: {code}: {message}", file=sys.stderr)
        if code in ("matches_other_person", "inconsistent_with_person"):
            print(
                "  if you are sure, an admin may store it anyway: --force --reason TEXT (audited)",
                file=sys.stderr,
            )
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if outcome.stored:
        print("reload the running agent to use them: systemctl reload edge-agent (or kill -HUP its pid)")
    return EXIT_OK if outcome.stored else EXIT_FAILURE


def _read_new_key(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def cmd_faces_rotate_key(args: argparse.Namespace) -> int:
    """Re-encrypt the face gallery under a new key, atomically (the agent must be stopped)."""
    from edge_agent.face_templates import TemplateKeyError, parse_key, rotate_key

    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, None, args.data_dir)
    setup_logging("warning")
    name = config.faces.template_key_credential
    old_key = _face_key(config, "faces rotate-key")
    if old_key is None:
        return EXIT_BAD_CONFIG
    try:
        new_key = parse_key(_read_new_key(args.new_key_file), f"{name} (new, from {args.new_key_file})")
    except OSError as err:
        print(f"edge-agent faces rotate-key: cannot read {args.new_key_file}: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except TemplateKeyError as err:
        print(f"edge-agent faces rotate-key: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if new_key == old_key:
        print("edge-agent faces rotate-key: the new key is the key in use", file=sys.stderr)
        return EXIT_BAD_CONFIG
    data_dir = Path(config.agent.data_dir)

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"re-encrypted {done}/{total}", file=sys.stderr, flush=True)

    try:
        result = rotate_key(
            data_dir,
            old_key,
            new_key,
            drop_damaged=args.drop_damaged,
            progress=progress,
            actor=getpass.getuser(),
        )
    except TemplateKeyError as err:
        print(f"edge-agent faces rotate-key: {err}; the gallery is unchanged", file=sys.stderr)
        return EXIT_FAILURE
    dropped = f", {result.dropped_damaged} damaged left behind" if result.dropped_damaged else ""
    print(
        f"re-encrypted {result.templates} face templates in {data_dir} under the new key{dropped}.\n"
        f"Now put the new key in the {name!r} credential (e.g. install -m 600 {args.new_key_file} "
        f"/etc/edge-agent/credentials/{name}) and start the agent: the old key no longer opens "
        "the gallery."
    )
    return EXIT_OK


def cmd_faces_list(args: argparse.Namespace) -> int:
    """Who holds face templates here, and how many (metadata only; no vector is shown)."""
    from edge_agent.face_templates import FaceTemplateStore, TemplateKeyError

    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, None, args.data_dir)
    key = _face_key(config, "faces list")
    if key is None:
        return EXIT_BAD_CONFIG
    try:
        store = FaceTemplateStore(Path(config.agent.data_dir), key)
    except TemplateKeyError as err:
        print(f"edge-agent faces list: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        persons = sorted({t.person_id for t in store.templates()})
        for person in persons:
            for info in store.info(person):
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created_at))
                print(f"{person}\t{info.id}\t{info.source}\t{info.model_id}\t{created}")
    finally:
        store.close()
    return EXIT_OK


def _person_stores(
    args: argparse.Namespace, command: str, *, need_key: bool
) -> tuple[GatewayConfig, Path, Roster, FaceTemplateStore | None, AttendanceBook, AlertBook] | int:
    """The config, data dir and the stores that hold a person's data, for ``roster show/forget``; or
    the exit code after saying what is wrong. Without a face template key the templates are not read
    (``show``) or the command refuses (``forget``: its audit record is kept in the face store)."""
    from edge_agent.alerts import AlertBook
    from edge_agent.attendance import AttendanceBook
    from edge_agent.face_templates import FACES_DB, FaceTemplateStore, TemplateKeyError
    from edge_agent.roster import Roster

    config = _load(args.config)
    if config is None:
        return EXIT_BAD_CONFIG
    config = _apply_overrides(config, None, args.data_dir)
    setup_logging("warning")
    data_dir = Path(config.agent.data_dir)
    if not (data_dir / "roster.db").exists():
        print(f"edge-agent {command}: no agent data in {data_dir} (wrong --data-dir?)", file=sys.stderr)
        return EXIT_FAILURE
    store = None
    if need_key or read_credential(config.faces.template_key_credential):
        key = _face_key(config, command)
        if key is None:
            return EXIT_BAD_CONFIG
        if need_key or (data_dir / FACES_DB).exists():
            try:
                store = FaceTemplateStore(data_dir, key)
            except TemplateKeyError as err:
                print(f"edge-agent {command}: {err}", file=sys.stderr)
                return EXIT_BAD_CONFIG
    agent = config.agent
    return (
        config,
        data_dir,
        Roster(data_dir),
        store,
        AttendanceBook(data_dir),
        AlertBook(data_dir, agent.alert_snapshot_retention_s, agent.alert_retention_s),
    )


def cmd_roster_show(args: argparse.Namespace) -> int:
    """Everything this gateway holds about a person (a data-subject request)."""
    from edge_agent.identity import dossier, render_dossier
    from sync import utc_now

    opened = _person_stores(args, "roster show", need_key=False)
    if isinstance(opened, int):
        return opened
    _, data_dir, roster, store, attendance, alerts = opened
    try:
        found = dossier(
            args.person,
            roster=roster,
            store=store,
            attendance=attendance,
            alerts=alerts,
            data_dir=data_dir,
            now=utc_now(),
        )
    finally:
        for closing in (roster, store, attendance, alerts):
            if closing is not None:
                closing.close()
    print(json.dumps(found, indent=2) if args.json else render_dossier(found))
    return EXIT_OK


def cmd_roster_forget(args: argparse.Namespace) -> int:
    """Delete locally what this gateway holds about a person, audited; a running agent drops their
    templates from its gallery at once (SIGHUP)."""

    from edge_agent.identity import delete_person_data, outbox_events_naming, signal_running_agent

    opened = _person_stores(args, "roster forget", need_key=True)
    if isinstance(opened, int):
        return opened
    _, data_dir, roster, store, attendance, alerts = opened
    assert store is not None
    try:
        deletion = delete_person_data(
            args.person,
            "local_forget",
            delete_templates=store.delete_person,
            attendance=attendance,
            alerts=alerts,
        )
        data = deletion.audit_data(actor=getpass.getuser(), role="admin", via="cli")
        if args.reason:
            data["reason"] = f"local_forget: {args.reason.strip()}"[:500]
        # The agent publishes it as a gateway.audit event at its reload below, or its next start.
        store.queue_audit(data)
        in_roster = args.person in roster.index.persons
    finally:
        for closing in (roster, store, attendance, alerts):
            closing.close()
    queued = [e for e in outbox_events_naming(data_dir, args.person) if not e["delivered"]]
    print(
        f"forgot {args.person}: {deletion.templates} face template(s), {deletion.attendance_records} "
        f"attendance record(s), {deletion.alerts} acknowledged alert(s) with {deletion.snapshots} "
        "snapshot(s) deleted"
    )
    if deletion.open_alerts_kept:
        print(
            f"kept {deletion.open_alerts_kept} OPEN alert(s) naming them: evidence until acknowledged; "
            "run `roster forget` again after acknowledging them"
        )
    if queued:
        print(
            f"{len(queued)} event(s) naming them wait in the outbox for the centre: they are kept (the "
            "centre's records in transit; delete them there)"
        )
    if in_roster:
        print(
            f"{args.person} is still in the roster (record, cards, consent): that is the centre's master "
            "data; to remove them from every gateway, delete them at the centre (a roster delta)"
        )
    pid = signal_running_agent(data_dir)
    if pid is not None:
        print(f"told the running agent (pid {pid}) to drop them from its gallery and publish the audit")
    else:
        print("no agent is running on this data dir: the audit is published at its next start")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """A device simulator speaking the real bytes, for commissioning and demos without hardware."""
    from device_drivers import DeviceError, run_simulator

    setup_logging("info")
    try:
        run_simulator(
            args.kind, args.profile, args.address, cards=args.card or None, interval_s=args.interval
        )
    except (DeviceError, ValueError) as err:
        print(f"edge-agent simulate: {err}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_cameras_discover(args: argparse.Namespace) -> int:
    """``edge-agent cameras discover``: WS-Discovery, then each camera's profiles and stream URIs,
    printed as a config snippet to paste (device_drivers.onvif.discovery does the work)."""
    from device_drivers import (
        DeviceError,
        camera_snippet,
        describe_camera,
        discover_cameras,
        load_password,
        parse_discovery_target,
    )

    try:
        targets = tuple(parse_discovery_target(t) for t in args.target or [])
        password = load_password(args.password_credential) if args.password_credential else None
    except (ValueError, DeviceError) as err:
        print(f"edge-agent cameras discover: {err}", file=sys.stderr)
        return EXIT_FAILURE

    async def run() -> int:
        found = await discover_cameras(
            args.timeout, interface=args.interface, targets=targets, multicast=not args.no_multicast
        )
        for error in found.errors:
            print(f"# warning: {error}", file=sys.stderr)
        ignored = sum(n for k, n in found.counters.items() if k.startswith("ignored_"))
        print(f"# {len(found.devices)} ONVIF device(s) answered; {ignored} other datagram(s) ignored")
        descriptions = []
        for match, sender in found.devices:
            print(
                f"# found {match.name or '?'} ({match.hardware or '?'}, {match.location or '?'}) at {sender}"
            )
            description = await describe_camera(match, args.user, password, timeout_s=args.request_timeout)
            if description.error:
                print(f"# {match.endpoint}: {description.error}", file=sys.stderr)
            descriptions.append(description)
        if not descriptions:
            return EXIT_FAILURE
        print(camera_snippet(descriptions, username=args.user, password_credential=args.password_credential))
        return EXIT_OK

    return asyncio.run(run())


def cmd_central(args: argparse.Namespace) -> int:
    """``edge-agent central ...`` is ``edge-central ...``: the centre's commands run in their own
    process (``python -m sync.central``), because the central side is no part of the gateway and
    ``edge_agent`` reaches ``sync`` only through its root, which leaves ``sync.central`` out."""
    os.execv(sys.executable, [sys.executable, "-m", "sync.central", *args.central_args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Campus edge gateway agent")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mqtt-url", help="broker URL (mqtt://host:port, mqtts://...); env EDGE_AGENT_MQTT_URL"
        )
        p.add_argument("--data-dir", help="where the SQLite files live; env EDGE_AGENT_DATA_DIR")

    def on_data_dir(p: argparse.ArgumentParser) -> None:
        """The commands that work on a gateway's data dir beside (or without) the running agent."""
        p.add_argument("--config", required=True, help="configuration file (YAML)")
        p.add_argument("--data-dir", help="the agent's data dir; env EDGE_AGENT_DATA_DIR")

    run = sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--config", required=True, help="configuration file (YAML)")
    overrides(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run the demo config, starting a local broker if none is reachable")
    demo.add_argument(
        "--config",
        default=str(project_file("config", "demo.yaml")),
        help="configuration file (YAML); by default the demo's own (from the checkout or the package)",
    )
    overrides(demo)
    demo.add_argument("--api-port", type=int, help="port of the local API and console (the config's, 8080)")
    demo.add_argument(
        "--real-schedules",
        action="store_true",
        help="keep the security rules' schedules (else the demo arms a watched zone that is not armed now)",
    )
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a configuration file; exit 2 on errors")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the JSON Schema of the configuration file")
    schema.set_defaults(func=cmd_config_schema)

    enroll = sub.add_parser("enroll", help="enroll face photos of a person in the roster (stored encrypted)")
    on_data_dir(enroll)
    enroll.add_argument("--person", required=True, help="person id, as in the roster")
    enroll.add_argument("photos", nargs="+", help="photos (JPEG/PNG) with exactly one face each")
    enroll.add_argument(
        "--force",
        action="store_true",
        help="store photos refused as another person's look-alike or unlike the person's own (admin)",
    )
    enroll.add_argument("--reason", help="why --force is right (required with it; audited)")
    enroll.set_defaults(func=cmd_enroll)

    faces = sub.add_parser("faces", help="the face template gallery (encrypted)")
    faces_sub = faces.add_subparsers(dest="faces_command", required=True)
    rotate = faces_sub.add_parser(
        "rotate-key",
        help="re-encrypt the gallery under a new key, atomically (stop the agent first)",
        description="Reads the current key from the configured credential and the new one from "
        "--new-key-file (64 hex digits; '-' for stdin). Then put the new key in the credential "
        "and start the agent.",
    )
    on_data_dir(rotate)
    rotate.add_argument("--new-key-file", required=True, help="file holding the new key, or - for stdin")
    rotate.add_argument(
        "--drop-damaged", action="store_true", help="leave behind templates the old key cannot decrypt"
    )
    rotate.set_defaults(func=cmd_faces_rotate_key)
    faces_list = faces_sub.add_parser("list", help="persons holding templates: ids, source, model, date")
    on_data_dir(faces_list)
    faces_list.set_defaults(func=cmd_faces_list)

    simulate = sub.add_parser(
        "simulate",
        help="run a device simulator on a pty or TCP port (cards/events from stdin; end of input stops it "
        "only on a terminal or a pipe, else it runs until SIGTERM or Ctrl-C)",
        description="ADDRESS: 'pty' (a new pty; prints its path), 'pty:/path/link' (a pty behind a stable "
        "symlink), or 'HOST:PORT' / 'tcp://HOST:PORT' to listen for socket:// drivers.",
    )
    simulate.add_argument("kind", choices=["card_reader", "wiegand", "turnstile", "osdp"])
    simulate.add_argument("profile", help="firmware profile id or YAML path, e.g. em4100_id12")
    simulate.add_argument("address", help="pty | pty:/path/link | HOST:PORT")
    simulate.add_argument("--card", action="append", help="a card to present in turn (repeatable)")
    simulate.add_argument("--interval", type=float, default=2.0, help="seconds between those cards")
    simulate.set_defaults(func=cmd_simulate)

    cameras = sub.add_parser("cameras", help="ONVIF cameras on the network")
    cameras_sub = cameras.add_subparsers(dest="cameras_command", required=True)
    discover = cameras_sub.add_parser(
        "discover",
        help="find ONVIF cameras (WS-Discovery) and print a config snippet per camera: main and "
        "sub-stream URIs, and its events device",
    )
    discover.add_argument("--timeout", type=float, default=3.0, help="seconds to collect answers (3)")
    discover.add_argument("--interface", help="local IPv4 address to send the multicast probe from")
    discover.add_argument(
        "--target", action="append", help="HOST[:PORT] to probe by unicast as well (repeatable; port 3702)"
    )
    discover.add_argument("--no-multicast", action="store_true", help="probe only the --target addresses")
    discover.add_argument("--user", help="ONVIF login, to read profiles and stream URIs")
    discover.add_argument(
        "--password-credential", help="credential holding the password (as password_credential in the config)"
    )
    discover.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds per ONVIF request (10)"
    )
    discover.set_defaults(func=cmd_cameras_discover)

    roster_cmd = sub.add_parser(
        "roster", help="what the gateway holds about a person (data-subject requests)"
    )
    roster_sub = roster_cmd.add_subparsers(dest="roster_command", required=True)
    show = roster_sub.add_parser(
        "show",
        help="list everything this gateway holds about a person: roster record and consent, cards "
        "(masked), face template metadata, attendance, alerts and outbox events naming them",
    )
    show.add_argument("person", help="person id, as in the roster")
    on_data_dir(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(func=cmd_roster_show)
    forget = roster_sub.add_parser(
        "forget",
        help="delete locally what this gateway holds about a person (templates, attendance records, "
        "acknowledged alerts naming them), audited; a running agent drops them at once",
    )
    forget.add_argument("person", help="person id, as in the roster")
    on_data_dir(forget)
    forget.add_argument("--reason", help="why (e.g. the request's reference); kept in the audit record")
    forget.set_defaults(func=cmd_roster_forget)

    add_doctor_cli(sub)
    add_install_cli(sub)

    central = sub.add_parser(
        "central",
        help="the centre's commands (ingest, migrate, roster publish|resend): the same as edge-central",
        description="The same commands as edge-central: ingest, migrate, roster publish, roster resend. "
        "'edge-agent central COMMAND --help' shows each one's options.",
    )
    central.add_argument(
        "central_args", nargs=argparse.REMAINDER, metavar="COMMAND ...", help="edge-central's arguments"
    )
    central.set_defaults(func=cmd_central)

    status = sub.add_parser("status", help="print the status the running agent writes to its data dir")
    status.add_argument("--data-dir", help="the agent's data dir; env EDGE_AGENT_DATA_DIR")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # First, before the capture, analysis, ONNX Runtime and OpenCV threads exist: each would get a
    # malloc arena of its own (edge_agent.memory).
    limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"edge-agent: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG


if __name__ == "__main__":
    sys.exit(main())

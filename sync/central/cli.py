"""``edge-central ...``: a thin command line over the ingest library and the master-data publisher
(its own command: the central side runs at the centre, never on a gateway; ``edge-agent central``
is the same commands).

Installed as the ``edge-central`` command; ``python -m sync.central`` is the same.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sync.central.config import IngestConfig
from sync.central.errors import CentralError
from sync.central.logs import setup_logging

if TYPE_CHECKING:  # the publisher needs the PostgreSQL driver: imported by its commands only
    from sync.central.roster_publish import Convergence

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2


def _config(args: argparse.Namespace) -> IngestConfig | None:
    fields = {
        "mqtt_url": args.mqtt_url,
        "database": args.database,
        "group": args.group,
        "client_id": args.client_id,
        "topic_prefix": args.topic_prefix,
        "batch_max": args.batch_max,
        "batch_wait_ms": args.batch_wait_ms,
        "username": args.username,
        "stats_interval_s": args.stats_interval,
    }
    try:
        return IngestConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        print(f"edge-central ingest: {err}", file=sys.stderr)
        return None


def cmd_ingest(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    config = _config(args)
    if config is None:
        return EXIT_BAD_CONFIG
    # Imported here: the agent's CLI carries this command on gateways without the PostgreSQL driver.
    from sync.central.ingest import IngestConsumer

    consumer = IngestConsumer(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        consumer.run()
    except CentralError as err:
        print(f"edge-central ingest: {err}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    import psycopg

    from sync.central.schema import apply_migrations

    try:
        with psycopg.connect(args.database, autocommit=True) as conn:
            applied = apply_migrations(conn)
    except (psycopg.Error, CentralError) as err:
        print(f"edge-central migrate: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return EXIT_OK


EXIT_NOT_CAUGHT_UP = 3


def _duration(text: str) -> float:
    """Seconds, or a number with ``s``, ``m``, ``h`` or ``d``: ``3600``, ``90m``, ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (3600, 90m, 12h, 7d)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def _roster_options(args: argparse.Namespace, key: Any) -> Any:
    import getpass

    from sync.central.ingest import PASSWORD_ENV
    from sync.central.roster_publish import PublishOptions

    return PublishOptions(
        site=args.site,
        mqtt_url=args.mqtt_url,
        database=args.database,
        key=key,
        topic_prefix=args.topic_prefix,
        created_by=args.by or getpass.getuser(),
        max_message_bytes=args.max_message_bytes,
        wait_s=args.wait,
        username=args.username,
        password=os.environ.get(PASSWORD_ENV),
    )


def _load_key(args: argparse.Namespace, prog: str) -> Any:
    from sync.central.roster_publish import load_signing_key

    if not args.key_file or not args.key_id:
        print(f"{prog}: --key-file and --key-id are needed to sign (or use --dry-run)", file=sys.stderr)
        return None
    try:
        return load_signing_key(Path(args.key_file), args.key_id, args.valid_for)
    except CentralError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return None


def cmd_roster_publish(args: argparse.Namespace) -> int:
    """Check the export, then (unless ``--dry-run``) store, sign and publish the next version and
    report the gateways' convergence."""
    setup_logging(args.log_level)
    prog = "roster publish"
    import psycopg

    from sync.central import roster_export as export
    from sync.central import roster_publish as publish

    try:
        mapping, mapping_name = export.load_mapping(Path(args.mapping) if args.mapping else None)
        groups = export.load_groups(Path(args.groups))
        if args.query:
            source = export.read_query(args.query_database or args.database, args.query)
        else:
            source = export.read_source(Path(args.source), mapping)
        checked = export.check_export(source, mapping, groups, mapping_name=mapping_name)
    except export.ExportError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    key = None
    if not args.dry_run:
        key = _load_key(args, prog)
        if key is None:
            return EXIT_BAD_CONFIG
        if not args.mqtt_url:
            print(f"{prog}: --mqtt-url is needed to publish (or use --dry-run)", file=sys.stderr)
            return EXIT_BAD_CONFIG
    try:
        with publish.connect_database(args.database, migrate=not args.dry_run) as conn:
            planned = publish.plan(conn, args.site, checked.content)
            for line in planned.lines(args.show):
                print(line)
            if args.dry_run:
                print("dry run: nothing stored, nothing published")
                return EXIT_OK
            options = _roster_options(args, key)
            options.source = f"query: {args.query}" if args.query else str(Path(args.source).resolve())
            topics = publish.site_topics(args.topic_prefix, args.site)
            with publish.BrokerSession(
                args.mqtt_url, topics, username=options.username, password=options.password
            ) as session:
                if planned.version is None:
                    assert planned.previous is not None
                    version, content = planned.previous.version, planned.previous.content
                else:
                    publish.store_version(conn, planned, source=options.source, created_by=options.created_by)
                    version, content = planned.version, planned.content
                    try:
                        messages = publish.send_version(
                            session, conn, options, version, content, planned.delta
                        )
                    except CentralError as err:
                        raise CentralError(
                            f"{err}; version {version} is stored, not (all) sent: "
                            f"send it with 'roster resend --site {args.site} ...'",
                            code=err.code,
                        ) from err
                    print(
                        f"published version {version}: "
                        + ("delta and " if planned.delta is not None else "")
                        + f"snapshot in {messages.snapshot_parts} message(s)"
                        + (" (retained)" if messages.snapshot_parts == 1 else " (parts; the last retained)")
                    )
                report = publish.converge(
                    session, conn, options, version, content,
                    on_resend=lambda names: print(f"resending the snapshot: {', '.join(names)} asked"),
                )  # fmt: skip
    except (CentralError, psycopg.Error) as err:
        print(f"{prog}: {str(err).strip()}", file=sys.stderr)
        return EXIT_FAILURE
    return _reported(report, args)


def _reported(report: Convergence, args: argparse.Namespace) -> int:
    """Print the convergence report; the exit code says whether every gateway caught up in time
    (only when asked to ``--wait`` for it)."""
    for line in report.lines():
        print(line)
    if args.wait > 0 and not report.all_caught_up:
        return EXIT_NOT_CAUGHT_UP
    return EXIT_OK


def cmd_roster_resend(args: argparse.Namespace) -> int:
    """Sign and publish the stored latest version's snapshot again (before its signature expires,
    or for gateways that lost it), then report convergence."""
    setup_logging(args.log_level)
    prog = "roster resend"
    import psycopg

    from sync.central import roster_publish as publish

    key = _load_key(args, prog)
    if key is None:
        return EXIT_BAD_CONFIG
    try:
        with publish.connect_database(args.database) as conn:
            latest = publish.latest_version(conn, args.site)
            if latest is None:
                print(f"{prog}: site {args.site} has no published version yet", file=sys.stderr)
                return EXIT_FAILURE
            options = _roster_options(args, key)
            topics = publish.site_topics(args.topic_prefix, args.site)
            with publish.BrokerSession(
                args.mqtt_url, topics, username=options.username, password=options.password
            ) as session:
                messages = publish.send_version(session, conn, options, latest.version, latest.content, None)
                parts = messages.snapshot_parts
                print(f"sent version {latest.version} again: snapshot in {parts} message(s)")
                report = publish.converge(session, conn, options, latest.version, latest.content)
    except (CentralError, psycopg.Error) as err:
        print(f"{prog}: {str(err).strip()}", file=sys.stderr)
        return EXIT_FAILURE
    return _reported(report, args)


def _add_roster_commands(sub: Any) -> None:
    roster = sub.add_parser("roster", help="master data: publish the school's export to a site's gateways")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True)

    def common(p: argparse.ArgumentParser, *, publishing: bool) -> None:
        p.add_argument("--site", required=True, help="site id, as in the gateways' gateway.site")
        p.add_argument("--database", required=True, help="central database: postgresql://user@host:port/db")
        p.add_argument(
            "--mqtt-url", required=not publishing, help="broker URL, mqtt://host:port or mqtts://..."
        )
        p.add_argument("--username", help="broker user name; password from EDGE_CENTRAL_MQTT_PASSWORD")
        p.add_argument("--key-file", required=not publishing, help="the centre's Ed25519 private key (PEM)")
        p.add_argument("--key-id", required=not publishing, help="its id in the gateways' roster_keys")
        p.add_argument(
            "--valid-for",
            type=_duration,
            default=7 * 86400.0,
            help="how long the signatures stay valid (default 7d; at most the gateways' roster "
            "signature limit): resend before then, the retained snapshot expires with it",
        )
        p.add_argument("--topic-prefix", default="campus/v1", help="topic prefix (default: campus/v1)")
        p.add_argument(
            "--max-message-bytes",
            type=int,
            default=512 * 1024,
            help="largest message the broker takes; a bigger snapshot goes in parts (default 524288)",
        )
        p.add_argument(
            "--wait",
            type=float,
            default=0.0,
            help="seconds to wait for every known gateway to hold the version; exit 3 if one does not",
        )
        p.add_argument("--by", help="who publishes, recorded with the version (default: the OS user)")
        p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ...")

    publish = roster_sub.add_parser(
        "publish",
        help="check an export (CSV, XLSX or a PostgreSQL query) and publish it as the next version",
        description="Exit codes: 0 published (or nothing to publish), 1 database/broker failure, "
        "2 bad export/mapping/key (every problem listed with its line), 3 gateways not caught up "
        "within --wait. See docs/MASTER_DATA.md.",
    )
    source = publish.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", help="the export: a .csv or .xlsx file, one row per person")
    source.add_argument("--query", help="or a PostgreSQL SELECT returning the same columns")
    publish.add_argument("--query-database", help="database the --query runs in (default: --database)")
    publish.add_argument("--mapping", help="column mapping (YAML); default: columns named as the fields")
    publish.add_argument("--groups", required=True, help="access groups, schedules, blocklist (YAML)")
    publish.add_argument(
        "--dry-run", action="store_true", help="print the changes; store nothing, publish nothing"
    )
    publish.add_argument("--show", type=int, default=50, help="changes listed per kind (default 50)")
    common(publish, publishing=True)
    publish.set_defaults(func=cmd_roster_publish)

    resend = roster_sub.add_parser(
        "resend", help="sign and publish the latest stored version's snapshot again"
    )
    common(resend, publishing=False)
    resend.set_defaults(func=cmd_roster_resend)


def build_parser() -> argparse.ArgumentParser:
    """``edge-central ingest``, ``migrate`` and ``roster publish|resend``; each leaf parser sets
    ``func`` (taking the parsed namespace, returning an exit code)."""
    parser = argparse.ArgumentParser(
        prog="edge-central",
        description="Central side: ingest gateway events into PostgreSQL, publish master data",
    )
    add_commands(parser)
    return parser


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the central commands under ``parser``: ``edge-central`` itself, or ``edge-agent central``."""
    sub = parser.add_subparsers(dest="central_command", required=True)

    ingest = sub.add_parser(
        "ingest",
        help="consume the gateways' topics (MQTT 5 shared subscription) into PostgreSQL",
        description="Broker password, if any, from the environment variable EDGE_CENTRAL_MQTT_PASSWORD.",
    )
    ingest.add_argument("--mqtt-url", required=True, help="broker URL, mqtt://host:port or mqtts://...")
    ingest.add_argument("--database", required=True, help="postgresql://user@host:port/db")
    ingest.add_argument("--group", help="shared-subscription group (default: central)")
    ingest.add_argument(
        "--client-id",
        help="MQTT client id: stable across restarts and unique per consumer "
        "(default: central-ingest-<group>-<hostname>)",
    )
    ingest.add_argument("--topic-prefix", help="topic prefix (default: campus/v1)")
    ingest.add_argument("--batch-max", type=int, help="most messages per transaction (default: 500)")
    ingest.add_argument(
        "--batch-wait-ms", type=float, help="how long a lone message waits for company (default: 5)"
    )
    ingest.add_argument("--username", help="broker user name")
    ingest.add_argument(
        "--stats-interval", type=float, help="seconds between counter log lines (default: 30)"
    )
    ingest.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    ingest.set_defaults(func=cmd_ingest)

    migrate = sub.add_parser("migrate", help="create or upgrade the central database schema, then exit")
    migrate.add_argument("--database", required=True, help="postgresql://user@host:port/db")
    migrate.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    migrate.set_defaults(func=cmd_migrate)
    _add_roster_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


__all__ = [
    "add_commands",
    "build_parser",
    "cmd_ingest",
    "cmd_migrate",
    "cmd_roster_publish",
    "cmd_roster_resend",
    "main",
]

"""``edge-central ...``: a thin command line over the ingest library (its own command: the
central consumer runs at the centre, never on a gateway).

Installed as the ``edge-central`` command; ``python -m sync.central`` is the same.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from pydantic import ValidationError

from sync.central.config import IngestConfig
from sync.central.errors import CentralError
from sync.central.logs import setup_logging

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


def build_parser() -> argparse.ArgumentParser:
    """``edge-central ingest`` and ``edge-central migrate``; each leaf parser sets ``func`` (taking
    the parsed namespace, returning an exit code)."""
    parser = argparse.ArgumentParser(
        prog="edge-central", description="Central side: ingest gateway events into PostgreSQL"
    )
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


__all__ = ["build_parser", "cmd_ingest", "cmd_migrate", "main"]

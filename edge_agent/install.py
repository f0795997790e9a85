"""``edge-agent install-service``: set a box up to run the agent under systemd.

Creates the ``edge-agent`` system user and the device groups the unit names, the directories
(``/etc/edge-agent``, its root-only ``credentials/``, the state and log directories), installs
the unit file and a validated configuration, and prints what is left for a person to do (each
credential the configuration needs, ``systemctl enable --now``). Running it again changes nothing
that is already right: it never overwrites a credential, and keeps an existing configuration unless
a new one is given (the old one is kept beside it).

It works from wherever the agent is installed (a wheel in a virtualenv, an editable checkout): the
unit file, the demo configuration and the install notes come from :func:`edge_agent.resources.project_file`,
and the unit's ``ExecStart=`` is set to the ``edge-agent`` of the environment the command runs from
(``--agent-binary`` overrides it), so ``/opt/edge-agent/venv/bin/edge-agent install-service`` installs
a unit that runs that same virtualenv.

``--prefix DIR`` installs into a directory tree instead of ``/`` (images, tests). Users and groups
are then written into ``DIR/etc/passwd`` and ``DIR/etc/group`` with ``useradd --prefix`` when those
files exist there, and skipped (with a message) when they do not.
"""

from __future__ import annotations

import argparse
import filecmp
import functools
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from device_drivers import OsdpBusConfig
from edge_agent.config import ConfigFileError, GatewayConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.resources import project_file
from edge_agent.secrets import credential_env_name

SERVICE_USER = "edge-agent"
UNIT_NAME = "edge-agent.service"
DEFAULT_UNIT = project_file("systemd", UNIT_NAME)
DEFAULT_DEMO_CONFIG = project_file("config", "demo.yaml")
DEFAULT_DOC = project_file("docs", "OPERATIONS.md")
CREDENTIALS_DIR = "/etc/edge-agent/credentials"
# What a path in ExecStart= must not hold to be used as it is: whitespace and quotes (word
# splitting), a backslash (escapes), % (specifiers) and $ (variable expansion).
_UNIT_UNSAFE = re.compile(r"[\s\"'\\%$;]")
# Under these the service cannot see the binary: the unit has ProtectHome=yes and PrivateTmp=yes.
_HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")


class InstallError(ConfigError):
    """The installation cannot go on (not root, a bad configuration, a missing source file)."""

    def __init__(self, message: str, *, code: str = "install_failed") -> None:
        super().__init__(message, code=code)


@dataclass
class InstallReport:
    """What was done (or, with ``dry_run``, would be done), and what is left for a person."""

    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def agent_binary() -> Path:
    """The ``edge-agent`` script of the environment this code runs from (its virtualenv's ``bin/``).

    Falls back to the one on ``PATH``, then to the scripts directory even when the file is missing
    (the next steps then say so)."""
    scripts = Path(sysconfig.get_path("scripts")) / "edge-agent"
    if scripts.is_file():
        return scripts
    found = shutil.which("edge-agent")
    return Path(found) if found else scripts


def unit_exec_start(unit_text: str, binary: Path) -> str:
    """``unit_text`` with the program of its ``ExecStart=`` line replaced by ``binary``."""
    text, replaced = re.subn(r"^(ExecStart=)(\S+)", lambda m: m.group(1) + str(binary), unit_text, flags=re.M)
    if replaced != 1:
        raise InstallError(f"the unit file has {replaced} ExecStart= lines, expected one", code="no_unit")
    return text


def unit_credentials(unit_text: str) -> dict[str, str]:
    """The unit's ``LoadCredential=name:path`` lines as name → path, in order."""
    credentials: dict[str, str] = {}
    for raw in unit_text.splitlines():
        key, _, value = raw.strip().partition("=")
        if key == "LoadCredential":
            name, _, path = value.strip().partition(":")
            credentials[name] = path
    return credentials


@dataclass(frozen=True)
class CredentialNeed:
    """A credential the configuration needs: its name, why, and how to put it in place."""

    name: str
    why: str
    how: str


def needed_credentials(config: GatewayConfig) -> list[CredentialNeed]:
    """Every credential ``config`` uses, with the command that fills it, in the order of the file.

    ``how`` is a shell command (run as root) writing ``/etc/edge-agent/credentials/<name>``; the file
    already exists (install-service leaves it empty, 0600), so ``>`` keeps its mode."""

    def path(name: str) -> str:
        return f"{CREDENTIALS_DIR}/{name}"

    needs: list[CredentialNeed] = []
    mqtt = config.mqtt
    if mqtt.username:
        needs.append(
            CredentialNeed(
                mqtt.password_credential,
                f"the broker password of mqtt.username {mqtt.username!r}",
                f"sudo install -m 0600 /dev/stdin {path(mqtt.password_credential)}   (type it, then Ctrl-D)",
            )
        )
    if mqtt.tls is not None and mqtt.tls.key_credential:
        name = mqtt.tls.key_credential
        needs.append(
            CredentialNeed(
                name,
                "the client's private key (PEM) for mutual TLS with the broker",
                f"sudo install -m 0600 client.key {path(name)}",
            )
        )
    if any(camera.face for camera in config.cameras):
        name = config.faces.template_key_credential
        needs.append(
            CredentialNeed(
                name,
                "the key that encrypts face templates (32 random bytes as 64 hex digits); without it "
                "face recognition stays off. Keep a copy offline: templates cannot be read without it",
                f"sudo sh -c 'openssl rand -hex 32 > {path(name)}'",
            )
        )
    if config.api.enabled:
        name = config.api.tokens_credential
        needs.append(
            CredentialNeed(
                name,
                "the local API and console tokens, one 'role:token[:name]' per line (roles viewer, "
                "operator, admin; tokens of 16 characters or more); without it only /health, /ready "
                "and /metrics answer",
                f"sudo sh -c 'echo \"admin:$(openssl rand -hex 24):it-office\" >> {path(name)}'",
            )
        )
    if config.commands.enabled:
        name = config.commands.keys_credential
        needs.append(
            CredentialNeed(
                name,
                "the keys trusted for signed remote commands (JSON, see COMMANDS.md); without them every "
                "command is refused",
                f"sudo install -m 0600 command_keys.json {path(name)}",
            )
        )
    if config.agent.roster_signatures == "required":
        name = config.agent.roster_keys_credential
        needs.append(
            CredentialNeed(
                name,
                "the keys trusted to sign master data, roster snapshots and deltas (JSON, the format of "
                "the command keys; INTEGRATORS.md 'Signed master data'); without them every roster "
                "message from the centre is refused and the gate decides from the roster it holds",
                f"sudo install -m 0600 roster_keys.json {path(name)}",
            )
        )
    for bus in config.devices:
        if not isinstance(bus, OsdpBusConfig) or bus.simulated or not bus.secure_channel:
            continue
        for reader in bus.readers:
            secret = reader.scbk_secret
            if secret:
                needs.append(
                    CredentialNeed(
                        secret,
                        f"the secure-channel key (SCBK, 32 hex digits) of OSDP reader {reader.id}",
                        f"sudo install -m 0600 /dev/stdin {path(secret)}   (type it, then Ctrl-D)",
                    )
                )
    for device in config.devices:
        secret = getattr(device, "password_credential", None)
        if secret and not getattr(device, "simulated", False):
            needs.append(
                CredentialNeed(
                    secret,
                    f"the password (a ZKTeco terminal: its comm key) the gateway logs in to "
                    f"{device.kind.replace('_', ' ')} device {device.id} with",
                    f"sudo install -m 0600 /dev/stdin {path(secret)}   (type it, then Ctrl-D)",
                )
            )
    return needs


def where_to_put(name: str, *, file_only: bool = False) -> str:
    """Where the agent looks for credential ``name``, for a message that says how to provide it."""
    places = [f"{CREDENTIALS_DIR}/{name} (the service loads it with LoadCredential=)"]
    try:
        loaded = unit_credentials(DEFAULT_UNIT.read_text())
    except OSError:
        loaded = {}
    if loaded and name not in loaded:
        places[0] = (
            f"{CREDENTIALS_DIR}/{name} plus a drop-in line (systemctl edit edge-agent) "
            f"LoadCredential={name}:{CREDENTIALS_DIR}/{name}, which the shipped unit does not have"
        )
    places.append(f"$CREDENTIALS_DIRECTORY/{name}")
    if not file_only:
        places.append(f"the environment variable {credential_env_name(name)}")
    return "Put it in " + ", or ".join(places)


def unit_groups(unit_text: str) -> list[str]:
    """The groups the unit names: ``Group=`` first, then ``SupplementaryGroups=``."""
    groups: list[str] = []
    for raw in unit_text.splitlines():
        key, _, value = raw.strip().partition("=")
        if key == "Group":
            groups.insert(0, value.strip())
        elif key == "SupplementaryGroups":
            groups.extend(value.split())
    return list(dict.fromkeys(groups))


class _Accounts:
    """Users and groups on the target: the host's NSS for ``/``, the files under a prefix."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.host = prefix == Path("/")

    @property
    def available(self) -> bool:
        return self.host or ((self.prefix / "etc/passwd").is_file() and (self.prefix / "etc/group").is_file())

    def _rows(self, name: str) -> list[list[str]]:
        path = self.prefix / "etc" / name
        return [
            line.split(":") for line in path.read_text().splitlines() if line and not line.startswith("#")
        ]

    def group(self, name: str) -> tuple[int, list[str]] | None:
        """gid and members of ``name``, or None."""
        if self.host:
            try:
                g = grp.getgrnam(name)
            except KeyError:
                return None
            return g.gr_gid, list(g.gr_mem)
        for row in self._rows("group"):
            if row[0] == name and len(row) >= 4:
                return int(row[2]), [m for m in row[3].split(",") if m]
        return None

    def user(self, name: str) -> tuple[int, int] | None:
        """uid and primary gid of ``name``, or None."""
        if self.host:
            try:
                u = pwd.getpwnam(name)
            except KeyError:
                return None
            return u.pw_uid, u.pw_gid
        for row in self._rows("passwd"):
            if row[0] == name and len(row) >= 4:
                return int(row[2]), int(row[3])
        return None

    def command(self, *args: str) -> list[str]:
        return [args[0], *(() if self.host else ("--prefix", str(self.prefix))), *args[1:]]


class Installer:
    """One installation run; :meth:`run` does it all and returns the report."""

    def __init__(
        self,
        prefix: Path = Path("/"),
        *,
        config: Path | None = None,
        unit: Path = DEFAULT_UNIT,
        binary: Path | None = None,
        dry_run: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.prefix = prefix
        self.config = config
        self.unit = unit
        self.binary = agent_binary() if binary is None else binary
        self.dry_run = dry_run
        self.out = out
        self.report = InstallReport()
        self.accounts = _Accounts(prefix)
        self.uid: int | None = None
        self.gid: int | None = None

    def path(self, absolute: str) -> Path:
        return self.prefix / absolute.lstrip("/")

    def _say(self, text: str) -> None:
        self.report.actions.append(text)
        if self.out is not None:
            print(text, file=self.out)

    def _act(self, description: str, action: Callable[[], object]) -> None:
        if self.dry_run:
            self._say(f"would {description}")
            return
        action()
        self._say(description)

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise InstallError(f"{' '.join(command)} failed: {done.stderr.strip() or done.returncode}")

    # -- steps -------------------------------------------------------------------------------------

    def check_sources(self) -> str:
        """The unit's text with ``ExecStart=`` running :attr:`binary`, once everything given is usable."""
        try:
            unit_text = self.unit.read_text()
        except OSError as err:
            raise InstallError(
                f"cannot read the unit file {self.unit}: {err.strerror}; pass --unit FILE", code="no_unit"
            ) from err
        if not self.binary.is_absolute() or _UNIT_UNSAFE.search(str(self.binary)):
            raise InstallError(
                f"the unit cannot run {str(self.binary)!r}: ExecStart= needs an absolute path without "
                "spaces, quotes, '\\', '%', '$' or ';'; install the agent in such a place (e.g. "
                "/opt/edge-agent/venv) or pass --agent-binary PATH",
                code="bad_agent_binary",
            )
        if self.config is not None:
            try:
                load_config(self.config)
            except ConfigFileError as err:
                raise InstallError(
                    f"the configuration is not valid, nothing installed:\n{err}", code="bad_config"
                ) from err
        if not self.dry_run and self.prefix == Path("/") and os.geteuid() != 0:
            raise InstallError("installing into / needs root: run it with sudo (or try --dry-run)")
        return unit_exec_start(unit_text, self.binary)

    def users_and_groups(self, groups: list[str]) -> None:
        accounts = self.accounts
        if not accounts.available:
            self.report.notes.append(
                f"users and groups skipped: {self.prefix}/etc/passwd and /etc/group do not exist; on the "
                f"target run: groupadd --system <group> for each of {', '.join(groups)} that is missing, "
                f"then useradd --system --gid {SERVICE_USER} --groups {','.join(groups[1:])} "
                f"--home-dir /var/lib/edge-agent --no-create-home --shell /usr/sbin/nologin {SERVICE_USER}"
            )
            self._say("skip users and groups (no passwd/group files under the prefix)")
            return
        for group in groups:
            if accounts.group(group) is None:
                self._act(
                    f"create group {group}",
                    functools.partial(self._run, accounts.command("groupadd", "--system", group)),
                )
            else:
                self._say(f"exists: group {group}")
        supplementary = [g for g in groups if g != SERVICE_USER]
        if accounts.user(SERVICE_USER) is None:
            command = accounts.command(
                "useradd",
                "--system",
                "--gid",
                SERVICE_USER,
                "--home-dir",
                "/var/lib/edge-agent",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "Campus edge gateway agent",
            )
            if supplementary:
                command += ["--groups", ",".join(supplementary)]
            self._act(
                f"create user {SERVICE_USER} (groups {', '.join(groups)})",
                lambda: self._run([*command, SERVICE_USER]),
            )
        else:
            self._say(f"exists: user {SERVICE_USER}")
            # The unit adds the groups to the service itself; membership here is for
            # `sudo -u edge-agent edge-agent doctor`, which should see what the service sees.
            missing = [g for g in supplementary if SERVICE_USER not in (accounts.group(g) or (0, []))[1]]
            if missing:
                self._act(
                    f"add {SERVICE_USER} to {', '.join(missing)}",
                    lambda: self._run(
                        accounts.command("usermod", "--append", "--groups", ",".join(missing), SERVICE_USER)
                    ),
                )
        if not self.dry_run:
            user_row = accounts.user(SERVICE_USER)
            group_row = accounts.group(SERVICE_USER)
            self.uid = user_row[0] if user_row else None
            self.gid = group_row[0] if group_row else None

    def directory(self, absolute: str, mode: int, owner: int | None, group: int | None) -> None:
        path = self.path(absolute)
        if path.is_dir():
            current = path.stat()
            wrong_mode = (current.st_mode & 0o7777) != mode
            wrong_owner = (owner is not None and current.st_uid != owner) or (
                group is not None and current.st_gid != group
            )
            if not (wrong_mode or wrong_owner):
                self._say(f"exists: {absolute} ({mode:04o})")
                return

        def make() -> None:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
            if os.geteuid() == 0 and (owner is not None or group is not None):
                os.chown(path, -1 if owner is None else owner, -1 if group is None else group)

        self._act(f"set up {absolute} ({mode:04o})", make)

    def file(self, source: Path, absolute: str, mode: int, group: int | None = None) -> bool:
        """Install ``source`` at ``absolute`` if it differs; True when the file was (or would be) written."""
        return self.content(source.read_bytes(), absolute, mode, group)

    def content(self, data: bytes, absolute: str, mode: int, group: int | None = None) -> bool:
        """Write ``data`` at ``absolute`` if it differs; True when the file was (or would be) written."""
        target = self.path(absolute)
        if target.is_file() and target.read_bytes() == data:
            self._say(f"unchanged: {absolute}")
            return False

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            if os.geteuid() == 0 and group is not None:
                os.chown(tmp, 0, group)
            tmp.replace(target)  # atomic: a reader sees the old file or the new one

        self._act(f"{'update' if target.exists() else 'install'} {absolute}", copy)
        return True

    def credentials(self, unit_text: str) -> None:
        """An empty file for each ``LoadCredential=`` of the unit that is not there yet."""
        for absolute in unit_credentials(unit_text).values():
            target = self.path(absolute)
            if target.exists():
                self._say(f"kept: {absolute}")
                continue

            def placeholder(target: Path = target) -> None:
                # An empty file, because LoadCredential= refuses to start the unit when the file is
                # missing; empty means "not used" (anonymous broker, no client certificate).
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)

            self._act(f"create empty {absolute} (0600)", placeholder)

    def configuration(self) -> None:
        installed_at = self._behind_link("/etc/edge-agent/gateway.yaml")
        target = self.path(installed_at)
        source = self.config
        if source is None:
            if target.exists():
                self._say(f"kept: {installed_at}")
                self._validate_installed(target)
                return
            source = DEFAULT_DEMO_CONFIG
            self.report.notes.append(
                "installed the demo configuration (simulated devices): edit /etc/edge-agent/gateway.yaml "
                "for this site before enabling the service"
            )
            if not source.is_file():
                raise InstallError(f"no demo configuration at {source}; pass --config FILE", code="no_config")
        group = self.gid
        if target.exists() and not filecmp.cmp(source, target, shallow=False):
            backup = f"{installed_at}.{time.strftime('%Y%m%d-%H%M%S')}.bak"
            self._act(
                f"keep the previous configuration as {backup}",
                lambda: shutil.copy2(target, self.path(backup)),
            )
        self.file(source, installed_at, 0o640, group)
        # A relative roster seed is read beside the configuration file: it has to travel with it.
        config = load_config(source)
        seed = config.agent.roster_seed
        if seed is not None and not Path(seed).is_absolute():
            seed_source = source.parent / seed
            if seed_source.is_file():
                self.file(seed_source, f"/etc/edge-agent/{seed}", 0o640, group)
            else:
                self.report.notes.append(
                    f"roster seed {seed_source} not found; the agent will start without it"
                )

    def _behind_link(self, absolute: str) -> str:
        """``absolute``, or the file its link names when it is one: docs/OPERATIONS.md has the
        configuration kept in a directory the agent may write and linked from where the unit reads
        it, so a reinstall updates that file and keeps the link (replacing the link by a file would
        leave the agent a read-only copy, and the one it writes to stale)."""
        link = self.path(absolute)
        if not link.is_symlink():
            return absolute
        # Relative to the link's directory; an absolute link is taken as it is, inside the prefix.
        return os.path.normpath(os.path.join(os.path.dirname(absolute), os.readlink(link)))

    def _validate_installed(self, target: Path) -> None:
        try:
            load_config(target)
        except ConfigFileError as err:
            self.report.notes.append(
                f"the installed configuration is not valid; the service will not start:\n{err}"
            )

    def run(self) -> InstallReport:
        unit_text = self.check_sources()
        groups = unit_groups(unit_text)
        self.users_and_groups(groups)
        self.directory("/etc/edge-agent", 0o750, 0, self.gid)
        self.directory(CREDENTIALS_DIR, 0o700, 0, 0)
        self.directory("/var/lib/edge-agent", 0o750, self.uid, self.gid)
        self.directory("/var/log/edge-agent", 0o750, self.uid, self.gid)
        self.credentials(unit_text)
        self.configuration()
        unit_changed = self.content(unit_text.encode(), f"/etc/systemd/system/{UNIT_NAME}", 0o644)
        if DEFAULT_DOC.is_file():
            self.file(DEFAULT_DOC, "/usr/local/share/doc/edge-agent/OPERATIONS.md", 0o644)
        else:
            self.report.notes.append(f"the install notes were not found at {DEFAULT_DOC}; not installed")
        self._next_steps(unit_text, unit_changed)
        return self.report

    def _installed_config(self) -> GatewayConfig | None:
        """The configuration the service will read (None when it is not there or not valid: a note
        says so already)."""
        target = self.path("/etc/edge-agent/gateway.yaml")
        source = target if target.is_file() else (self.config or DEFAULT_DEMO_CONFIG)  # a dry run
        try:
            return load_config(source)
        except (ConfigFileError, OSError):
            return None

    def _binary_steps(self) -> list[str]:
        binary = str(self.binary)
        if not self.path(binary).is_file():
            where = "" if self.prefix == Path("/") else f" inside {self.prefix}"
            return [
                f"install the agent where the unit runs it: {binary}{where} (python3 -m venv "
                "/opt/edge-agent/venv, then pip install the wheel there; see OPERATIONS.md), or run "
                "install-service again with --agent-binary PATH"
            ]
        if binary.startswith(_HIDDEN_FROM_SERVICE):
            return [
                f"the unit runs {binary}, which the service cannot see (ProtectHome=yes, PrivateTmp=yes): "
                "install the wheel into /opt/edge-agent/venv and run its edge-agent install-service"
            ]
        return []

    def _credential_steps(self, unit_text: str) -> list[str]:
        config = self._installed_config()
        if config is None:
            return []
        loaded = unit_credentials(unit_text)
        steps = []
        for need in needed_credentials(config):
            absolute = f"{CREDENTIALS_DIR}/{need.name}"
            target = self.path(absolute)
            if target.is_file() and target.stat().st_size > 0:
                continue
            step = f"fill the credential {need.name} ({need.why}): {need.how}"
            if need.name not in loaded:
                # Only files named in a LoadCredential= line reach the service.
                step += (
                    f"; and give it to the service: sudo systemctl edit edge-agent, then add [Service] "
                    f"LoadCredential={need.name}:{absolute}"
                )
            steps.append(step)
        if not config.mqtt.username:
            steps.append(
                "the configuration connects to the broker anonymously (no mqtt.username); if the broker "
                f"needs a password, set mqtt.username and put the password in {CREDENTIALS_DIR}/"
                f"{config.mqtt.password_credential}"
            )
        return steps

    def _next_steps(self, unit_text: str, unit_changed: bool) -> None:
        steps = self.report.next_steps
        steps.extend(self._binary_steps())
        steps.extend(self._credential_steps(unit_text))
        steps.append(f"check the box: sudo -u edge-agent {self.binary} doctor --data-dir /var/lib/edge-agent")
        steps.append(
            "start it: sudo systemctl daemon-reload && sudo systemctl enable --now edge-agent"
            if unit_changed
            else "start it: sudo systemctl enable --now edge-agent"
        )
        steps.append("watch it: journalctl -u edge-agent -f   and   edge-agent status")


def install_service(
    prefix: Path = Path("/"),
    *,
    config: Path | None = None,
    unit: Path = DEFAULT_UNIT,
    binary: Path | None = None,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> InstallReport:
    """Install the service into ``prefix`` (see the module docstring); raises :class:`InstallError`.

    ``binary`` is the ``edge-agent`` the unit runs; default: :func:`agent_binary`."""
    return Installer(prefix, config=config, unit=unit, binary=binary, dry_run=dry_run, out=out).run()


def cmd_install_service(args: argparse.Namespace) -> int:
    try:
        report = install_service(
            Path(args.prefix),
            config=Path(args.config) if args.config else None,
            unit=Path(args.unit) if args.unit else DEFAULT_UNIT,
            binary=Path(args.agent_binary) if args.agent_binary else None,
            dry_run=args.dry_run,
            out=sys.stdout,
        )
    except InstallError as err:
        print(f"edge-agent install-service: {err}", file=sys.stderr)
        # 2 for a bad configuration, as `edge-agent config check` does.
        return 2 if err.code == "bad_config" else 1
    for note in report.notes:
        print(f"note: {note}")
    print("\nNext steps:")
    for i, step in enumerate(report.next_steps, 1):
        print(f"  {i}. {step}")
    return 0


def add_install_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``edge-agent install-service`` on the CLI's subparsers (the handler is ``args.func``)."""
    install = subparsers.add_parser(
        "install-service",
        help="create the edge-agent user and directories, install the systemd unit and a config",
        description="Idempotent: a second run changes only what is not right yet. Never overwrites "
        "credentials; keeps a replaced configuration as gateway.yaml.<time>.bak.",
    )
    install.add_argument("--prefix", default="/", help="install into this root instead of / (images, tests)")
    install.add_argument(
        "--config",
        help="configuration to install (validated first); default: keep the installed one, or the demo",
    )
    install.add_argument("--unit", help=f"unit file to install (default: {DEFAULT_UNIT})")
    install.add_argument(
        "--agent-binary",
        help=f"the edge-agent the unit's ExecStart= runs (default: this one, {agent_binary()})",
    )
    install.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    install.set_defaults(func=cmd_install_service)


__all__ = [
    "CREDENTIALS_DIR",
    "CredentialNeed",
    "InstallError",
    "InstallReport",
    "Installer",
    "add_install_cli",
    "agent_binary",
    "install_service",
    "needed_credentials",
    "unit_credentials",
    "unit_exec_start",
    "unit_groups",
    "where_to_put",
]

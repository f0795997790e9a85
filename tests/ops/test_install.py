"""edge-agent install-service into temp roots: files, modes, owners, users and groups (through
``useradd --prefix`` on passwd/group files in the temp root, never the machine's), idempotence,
dry runs and refused configurations."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from edge_agent.api.auth import TokenTable
from edge_agent.config import load_config
from edge_agent.face_templates import parse_key
from edge_agent.install import (
    DEFAULT_UNIT,
    InstallError,
    agent_binary,
    install_service,
    needed_credentials,
    unit_credentials,
    unit_exec_start,
    unit_groups,
)
from tests.ops.unit_file import REPO_ROOT, parse_unit

CHANGING = ("install ", "update ", "create ", "set up ", "add ", "keep the previous")


def tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path under ``root`` with its mode, owner, group and (for files) content."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def seed_accounts(root: Path) -> None:
    """A target system's account files: root, and the dialout/video groups Debian always has."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\nvideo:x:44:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\nvideo:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o600)


def test_unit_groups_come_from_the_unit_file() -> None:
    groups = unit_groups(DEFAULT_UNIT.read_text())
    assert groups[0] == "edge-agent"
    assert {"dialout", "video", "gpio"} <= set(groups[1:])


def test_install_into_a_bare_prefix_then_again_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install_service(root)
    assert any("skip users and groups" in a for a in first.actions)
    assert any("useradd --system" in n for n in first.notes), "the skipped steps are spelled out"
    etc = root / "etc/edge-agent"
    # The shipped unit, running the edge-agent of the environment install-service ran from.
    installed_unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    assert installed_unit == unit_exec_start(DEFAULT_UNIT.read_text(), agent_binary())
    assert mode(etc) == 0o750 and mode(etc / "credentials") == 0o700
    for name in ("mqtt_password", "mqtt_client_key"):
        credential = etc / "credentials" / name
        assert credential.stat().st_size == 0 and mode(credential) == 0o600
    assert mode(root / "var/lib/edge-agent") == 0o750
    # The demo configuration, valid where it was installed, with its roster seed beside it.
    config = load_config(etc / "gateway.yaml")
    assert config.agent.roster_seed is not None and (etc / config.agent.roster_seed).is_file()
    assert mode(etc / "gateway.yaml") == 0o640
    assert any("demo configuration" in n for n in first.notes)
    assert any("systemctl daemon-reload" in s for s in first.next_steps)
    assert any("journalctl -u edge-agent" in s for s in first.next_steps)

    before = tree(root)
    second = install_service(root)
    assert tree(root) == before
    assert not [a for a in second.actions if a.startswith(CHANGING)], second.actions
    # Nothing changed in the unit, so no daemon-reload is asked for.
    assert not any("daemon-reload" in s for s in second.next_steps)


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd/groupadd --prefix need root")
def test_users_and_groups_are_created_in_the_prefix_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed_accounts(root)
    host_passwd = Path("/etc/passwd").read_bytes()
    host_group = Path("/etc/group").read_bytes()
    report = install_service(root)
    assert Path("/etc/passwd").read_bytes() == host_passwd
    assert Path("/etc/group").read_bytes() == host_group
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    user = passwd["edge-agent"]
    assert user[6] == "/usr/sbin/nologin" and user[5] == "/var/lib/edge-agent"
    assert int(user[2]) < 1000, "a system user"
    assert {"gpio", "input", "edge-agent"} <= set(groups), "missing groups are created"
    for group in ("dialout", "video", "gpio", "input"):
        assert "edge-agent" in groups[group][3].split(","), group
    assert any(a.startswith("create group gpio") for a in report.actions)
    assert any(a == "exists: group dialout" for a in report.actions)
    uid, gid = int(user[2]), int(groups["edge-agent"][2])
    state = (root / "var/lib/edge-agent").stat()
    assert (state.st_uid, state.st_gid) == (uid, gid)
    assert (root / "etc/edge-agent/gateway.yaml").stat().st_gid == gid
    credentials = (root / "etc/edge-agent/credentials").stat()
    assert (credentials.st_uid, credentials.st_gid) == (0, 0)

    before = tree(root)
    again = install_service(root)
    assert tree(root) == before
    assert not [a for a in again.actions if a.startswith(CHANGING)], again.actions

    # A user that exists but lost a group gets it back (doctor run as the user needs it).
    text = (root / "etc/group").read_text().replace("gpio:x:", "gpio-old:x:", 1)
    (root / "etc/group").write_text(text.replace("\n", "\ngpio:x:4242:\n", 1))
    third = install_service(root)
    assert any(a == "add edge-agent to gpio" for a in third.actions), third.actions


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    report = install_service(root, dry_run=True)
    assert list(root.iterdir()) == []
    changing = [a for a in report.actions if not a.startswith(("exists", "kept", "unchanged", "skip"))]
    assert changing and all(a.startswith("would ") for a in changing), report.actions


def test_given_config_is_validated_and_replaces_with_a_backup(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install_service(root)
    etc = root / "etc/edge-agent"
    (etc / "credentials/mqtt_password").write_text("s3cret\n")
    demo = (etc / "gateway.yaml").read_bytes()

    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  site: s\n  id: g\nmqtt:\n  password: oops\n")
    with pytest.raises(InstallError) as refused:
        install_service(root, config=bad)
    assert refused.value.code == "bad_config" and ":5:" in str(refused.value)
    assert (etc / "gateway.yaml").read_bytes() == demo, "a refused config installs nothing"

    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump({"gateway": {"site": "north", "id": "gw-7"}, "mqtt": {"username": "gw-7"}})
    )
    report = install_service(root, config=site)
    assert (etc / "gateway.yaml").read_bytes() == site.read_bytes()
    backups = list(etc.glob("gateway.yaml.*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == demo
    assert any("keep the previous configuration" in a for a in report.actions)
    assert (etc / "credentials/mqtt_password").read_text() == "s3cret\n", "credentials are never overwritten"
    assert not any("mqtt_password" in s for s in report.next_steps), "the password is there already"
    # Same config again: nothing to do, no second backup.
    install_service(root, config=site)
    assert len(list(etc.glob("gateway.yaml.*.bak"))) == 1


@pytest.mark.parametrize("link", ["site/gateway.yaml", "/etc/edge-agent/site/gateway.yaml"])
def test_a_configuration_behind_a_link_is_updated_there_and_the_link_kept(tmp_path: Path, link: str) -> None:
    """docs/OPERATIONS.md: the file in /etc/edge-agent/site (the agent may write there) and linked
    from /etc/edge-agent/gateway.yaml. A reinstall with a new file updates the linked file, keeps
    its backup beside it, and leaves the link a link."""
    root = tmp_path / "root"
    root.mkdir()
    install_service(root)
    etc = root / "etc/edge-agent"
    (etc / "site").mkdir()
    demo = (etc / "gateway.yaml").read_bytes()
    (etc / "gateway.yaml").rename(etc / "site/gateway.yaml")
    (etc / "gateway.yaml").symlink_to(link)
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"gateway": {"site": "north", "id": "gw-7"}}))
    report = install_service(root, config=site)
    assert (etc / "gateway.yaml").is_symlink() and os.readlink(etc / "gateway.yaml") == link
    assert (etc / "site/gateway.yaml").read_bytes() == site.read_bytes()
    [backup] = list((etc / "site").glob("gateway.yaml.*.bak"))
    assert backup.read_bytes() == demo and not list(etc.glob("gateway.yaml.*.bak"))
    assert any("/etc/edge-agent/site/gateway.yaml" in a for a in report.actions), report.actions
    install_service(root, config=site)  # again: nothing to do
    assert (etc / "gateway.yaml").is_symlink() and len(list((etc / "site").glob("*.bak"))) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import argparse, sys\n"
        "from edge_agent.install import add_install_cli\n"
        "p = argparse.ArgumentParser(prog='edge-agent')\n"
        "add_install_cli(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "install-service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_cli_prints_actions_and_next_steps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {site: s}\n")
    # Two independent runs side by side: each is mostly interpreter start-up.
    with ThreadPoolExecutor(2) as pool:
        good_run = pool.submit(_cli, "--prefix", str(root))
        refused_run = pool.submit(_cli, "--prefix", str(tmp_path / "other"), "--config", str(bad))
        out, refused = good_run.result(), refused_run.result()
    assert out.returncode == 0, out.stderr
    assert "install /etc/systemd/system/edge-agent.service" in out.stdout
    assert "Next steps:" in out.stdout and "systemctl enable --now edge-agent" in out.stdout
    assert refused.returncode == 2 and "gateway.id" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_cli_dry_run_on_this_machine_touches_nothing() -> None:
    if Path("/etc/edge-agent").exists() or Path("/etc/systemd/system/edge-agent.service").exists():
        pytest.skip("this machine has the service installed; the dry run would only report it")
    out = _cli("--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would set up /etc/edge-agent (0750)" in out.stdout
    assert "would install /etc/systemd/system/edge-agent.service" in out.stdout
    assert not Path("/etc/edge-agent").exists()
    assert not Path("/etc/systemd/system/edge-agent.service").exists()


def test_installed_tree_passes_the_doctor_checks_that_need_no_hardware(tmp_path: Path) -> None:
    """What install-service leaves is what the service and doctor will read: a valid configuration
    with its roster seed, a writable state directory, empty credentials that doctor flags when the
    configuration needs them."""
    from edge_agent.doctor import Status, check_broker_auth, check_config, check_data_dir, credential_value

    root = tmp_path / "root"
    root.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "gateway": {"site": "north", "id": "gw-7"},
                "mqtt": {"url": "mqtt://127.0.0.1:1", "username": "gw-7"},
            }
        )
    )
    install_service(root, config=site)
    result, config = check_config(root / "etc/edge-agent/gateway.yaml")
    assert result.status is Status.OK and config is not None
    assert check_data_dir(root / "var/lib/edge-agent", config.outbox).status is not Status.FAIL
    password = credential_value(config.mqtt.password_credential, root / "etc/edge-agent/credentials")
    assert password == ""
    flagged = check_broker_auth(config, password)
    assert flagged.failed and "missing or empty" in flagged.detail


def _exec_start(root: Path) -> list[str]:
    return parse_unit((root / "etc/systemd/system/edge-agent.service").read_text())["Service"]["ExecStart"]


def test_the_unit_runs_the_edge_agent_of_the_environment_install_service_runs_from(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    report = install_service(root)
    binary = Path(sys.executable).parent / "edge-agent"
    assert binary.is_file(), "the test environment has its console script"
    assert _exec_start(root) == [f"{binary} run --config /etc/edge-agent/gateway.yaml"]
    assert any(f"sudo -u edge-agent {binary} doctor" in s for s in report.next_steps), report.next_steps
    # Only ExecStart= differs from the shipped unit.
    shipped = DEFAULT_UNIT.read_text().splitlines()
    installed = (root / "etc/systemd/system/edge-agent.service").read_text().splitlines()
    assert [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b] == [
        (
            "ExecStart=/opt/edge-agent/venv/bin/edge-agent run --config /etc/edge-agent/gateway.yaml",
            f"ExecStart={binary} run --config /etc/edge-agent/gateway.yaml",
        )
    ]


def test_an_agent_binary_the_service_cannot_run_is_named_in_the_next_steps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    missing = install_service(root, binary=Path("/opt/edge-agent/venv/bin/edge-agent"))
    assert _exec_start(root)[0].startswith("/opt/edge-agent/venv/bin/edge-agent run ")
    assert any(
        s.startswith("install the agent where the unit runs it: /opt/edge-agent/venv/bin/edge-agent inside")
        for s in missing.next_steps
    ), missing.next_steps

    # A binary under /tmp (as here) or /home is hidden from the sandboxed service.
    under_tmp = tmp_path / "venv/bin/edge-agent"
    under_tmp.parent.mkdir(parents=True)
    under_tmp.write_text("#!/bin/sh\n")
    (root / under_tmp.relative_to("/")).parent.mkdir(parents=True)
    (root / under_tmp.relative_to("/")).write_text("#!/bin/sh\n")
    hidden = install_service(root, binary=under_tmp)
    assert any("cannot see (ProtectHome=yes, PrivateTmp=yes)" in s for s in hidden.next_steps), (
        hidden.next_steps
    )


@pytest.mark.parametrize(
    "binary", ["relative/edge-agent", "/opt/edge agent/venv/bin/edge-agent", "/opt/%n/edge-agent"]
)
def test_an_agent_binary_exec_start_cannot_hold_is_refused(tmp_path: Path, binary: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InstallError) as refused:
        install_service(root, binary=Path(binary))
    assert refused.value.code == "bad_agent_binary" and "--agent-binary" in str(refused.value)
    assert list(root.iterdir()) == [], "nothing is installed"


def test_the_empty_credential_files_are_the_units_load_credential_lines(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install_service(root)
    loaded = unit_credentials(DEFAULT_UNIT.read_text())
    assert {"mqtt_password", "face_template_key", "api_tokens"} <= set(loaded)
    made = {f"/{p.relative_to(root)}" for p in (root / "etc/edge-agent/credentials").iterdir()}
    assert made == set(loaded.values())


SITE_WITH_EVERY_CREDENTIAL = """
gateway: {site: north, id: gw-7}
mqtt: {url: "mqtts://broker.example:8883", username: gw-7, tls: {key_credential: mqtt_client_key}}
commands: {enabled: true}
faces: {template_key_credential: faces_key}
cameras:
  - device: {kind: camera_sim, id: cam-7a, video: classroom.mp4, loop: true}
    face: {point: room-7a}
"""


def test_next_steps_name_each_credential_the_config_needs_with_a_command_that_fills_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(SITE_WITH_EVERY_CREDENTIAL)
    needs = {need.name: need for need in needed_credentials(load_config(site))}
    assert set(needs) == {
        "mqtt_password",
        "mqtt_client_key",
        "faces_key",
        "api_tokens",
        "command_keys",
        "roster_keys",
    }

    report = install_service(root, config=site)
    credentials = root / "etc/edge-agent/credentials"
    for name in needs:
        steps = [s for s in report.next_steps if s.startswith(f"fill the credential {name} ")]
        assert len(steps) == 1, (name, report.next_steps)
        assert f"/etc/edge-agent/credentials/{name}" in steps[0]
    # A name the unit does not load needs a drop-in line, and the step says which.
    (face_step,) = [s for s in report.next_steps if s.startswith("fill the credential faces_key ")]
    assert "LoadCredential=faces_key:/etc/edge-agent/credentials/faces_key" in face_step
    (token_step,) = [s for s in report.next_steps if s.startswith("fill the credential api_tokens ")]
    assert "role:token[:name]" in token_step and "LoadCredential=" not in token_step

    # The generated key and token lines are what the agent accepts. The commands are run as
    # printed, minus sudo, with the prefix's credentials directory for /etc/edge-agent/credentials.
    (credentials / "faces_key").touch(mode=0o600)
    for name in ("faces_key", "api_tokens"):
        command = (
            needs[name].how.removeprefix("sudo ").replace("/etc/edge-agent/credentials", str(credentials))
        )
        subprocess.run(command, shell=True, check=True, timeout=30)
    assert len(parse_key((credentials / "faces_key").read_text(), "faces_key")) == 32
    assert len(TokenTable.parse((credentials / "api_tokens").read_text())) == 1
    assert mode(credentials / "api_tokens") == 0o600, "filling keeps the file private"

    # Filled credentials leave the next steps; the others stay.
    again = install_service(root, config=site)
    filled = [
        s
        for s in again.next_steps
        if s.startswith(("fill the credential faces_key", "fill the credential api_tokens"))
    ]
    assert filled == []
    assert any(s.startswith("fill the credential mqtt_password ") for s in again.next_steps)


def test_a_config_without_faces_api_or_broker_user_asks_for_no_credential(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    # Signed master data is required by default: only a lab that turns it off needs no roster keys.
    site.write_text("gateway: {site: north, id: gw-7}\napi: {enabled: false}\n")
    assert [need.name for need in needed_credentials(load_config(site))] == ["roster_keys"]
    site.write_text(
        "gateway: {site: north, id: gw-7}\napi: {enabled: false}\nagent: {roster_signatures: optional}\n"
    )
    assert needed_credentials(load_config(site)) == []
    root = tmp_path / "root"
    root.mkdir()
    report = install_service(root, config=site)
    assert not any(s.startswith("fill the credential") for s in report.next_steps), report.next_steps
    assert any("connects to the broker anonymously" in s for s in report.next_steps)


def test_each_network_device_password_is_a_credential_to_fill(tmp_path: Path) -> None:
    """A terminal's or a camera's login comes from a credential, never the YAML: install-service
    names each one, and a simulated device (which logs in to its own simulator) needs none."""
    site = tmp_path / "site.yaml"
    site.write_text(
        "gateway: {site: north, id: gw-7}\napi: {enabled: false}\nagent: {roster_signatures: optional}\n"
        "devices:\n"
        "  - {kind: hikvision, id: hik-gate, host: 192.0.2.11, username: admin,"
        " password_credential: hik_gate_password}\n"
        "  - {kind: zkteco, id: zk-office, host: 192.0.2.10, password_credential: zk_office_key}\n"
        "  - {kind: onvif, id: cam-hall-events, host: 192.0.2.12, username: events,"
        " password_credential: cam_hall_password}\n"
        "  - {kind: hikvision, id: hik-demo, simulated: true, password_credential: hik_demo_password}\n"
    )
    needs = {need.name: need for need in needed_credentials(load_config(site))}
    assert set(needs) == {"hik_gate_password", "zk_office_key", "cam_hall_password"}
    assert "hikvision device hik-gate" in needs["hik_gate_password"].why
    assert "comm key" in needs["zk_office_key"].why
    root = tmp_path / "root"
    root.mkdir()
    report = install_service(root, config=site)
    for name in needs:
        assert any(s.startswith(f"fill the credential {name} ") for s in report.next_steps), report.next_steps

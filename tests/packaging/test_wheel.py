"""The wheel as a school's IT person gets it: built with ``python -m build``, installed with pip into
a fresh virtualenv outside the checkout, then ``edge-agent install-service`` and ``edge-agent demo``
run from there, on a real Mosquitto.

The package list in pyproject.toml is explicit (it maps config/, systemd/ and docs/ into the wheel as
``edge_agent/bundled/``), so a test holds it to the tree: a new package, or a data folder the agent
reads, cannot be left out of the wheel without a failure here.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge_agent.install import unit_exec_start
from edge_agent.resources import BUNDLED_FOLDERS
from sync.contract import validate_event
from tests.conftest import REPO_ROOT
from tests.support.broker import MosquittoBroker, free_port
from tests.support.mqtt import Collector, Received
from vision import MANIFEST_PATH, load_manifest

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SETUPTOOLS: dict[str, Any] = PYPROJECT["tool"]["setuptools"]
PACKAGE_ROOTS = ("edge_agent", "device_drivers", "vision", "sync", "firmware_profiles")
BUNDLED_PACKAGE = "edge_agent.bundled"
SKIPPED_DIRS = ("__pycache__",)

# Generous for CI (two cores, three test workers): each step takes about a third of this alone.
BUILD_TIMEOUT_S = 300
INSTALL_TIMEOUT_S = 600
DEMO_EVENTS_TIMEOUT_S = 240


def carried(path: Path, *, code: bool) -> bool:
    """Whether the wheel carries this file: package data, and Python source when ``code``."""
    patterns = SETUPTOOLS["package-data"]["*"]
    return (code and path.suffix == ".py") or any(fnmatch.fnmatch(path.name, p) for p in patterns)


def folders_with_carried_files(root: Path, *, code: bool) -> Iterator[Path]:
    """``root`` and every folder below it holding a file the wheel would carry (hidden and cache
    folders aside), relative to ``root``."""
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        relative = folder.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in relative.parts):
            continue
        if any(f.is_file() and carried(f, code=code) for f in folder.iterdir()):
            yield relative


def tree_packages() -> dict[str, Path]:
    """What the package list must be: dotted name → source folder, from the files in the tree.

    The bundled folders count for their data only (pages, the unit, the demo configuration): a
    script kept among the docs (model conversion tools) is no part of the agent."""
    packages: dict[str, Path] = {}
    for top in PACKAGE_ROOTS:
        for relative in folders_with_carried_files(REPO_ROOT / top, code=True):
            packages[".".join((top, *relative.parts))] = REPO_ROOT / top / relative
    for folder in BUNDLED_FOLDERS:
        for relative in folders_with_carried_files(REPO_ROOT / folder, code=False):
            packages[".".join((BUNDLED_PACKAGE, folder, *relative.parts))] = REPO_ROOT / folder / relative
    return packages


def test_the_package_list_names_every_folder_of_the_tree() -> None:
    expected = tree_packages()
    listed = SETUPTOOLS["packages"]
    assert len(listed) == len(set(listed)), "a package is listed twice"
    missing = sorted(set(expected) - set(listed))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    extra = sorted(set(listed) - set(expected))
    assert not extra, f"listed in pyproject.toml but no such folder with files: {extra}"
    # The bundled folders are mapped from the top of the repository, each to its own folder.
    mapped = {name: REPO_ROOT / source for name, source in SETUPTOOLS["package-dir"].items()}
    assert mapped == {f"{BUNDLED_PACKAGE}.{folder}": REPO_ROOT / folder for folder in BUNDLED_FOLDERS}


def build_wheel(outdir: Path) -> Path:
    """``python -m build`` as a release does: the sdist, then the wheel from it (a clean tree, so no
    stale ``build/`` leftovers of the checkout reach the wheel)."""
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        cwd=outdir,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (wheel,) = outdir.glob("campus_edge_gateway-*.whl")
    return wheel


def run_time_files() -> dict[str, Path]:
    """Every file the agent reads at run time, by its path in the wheel, found in the tree."""
    wanted: dict[str, Path] = {}

    def add(source: Path, in_wheel: str) -> None:
        wanted[in_wheel] = source

    manifest = load_manifest()
    add(MANIFEST_PATH, "vision/models/manifest.json")
    for model in manifest.models:
        add(MANIFEST_PATH.parent / model.file, f"vision/models/{model.file}")
    for pattern in ("vision/scenes/*.jpg", "vision/scenes/NOTICE.md", "firmware_profiles/*.yaml"):
        for path in REPO_ROOT.glob(pattern):
            add(path, str(path.relative_to(REPO_ROOT)))
    for path in (REPO_ROOT / "sync/schemas").rglob("*.json"):
        add(path, str(path.relative_to(REPO_ROOT)))
    add(REPO_ROOT / "sync/asyncapi.yaml", "sync/asyncapi.yaml")
    for path in (REPO_ROOT / "edge_agent/api/static").iterdir():
        add(path, str(path.relative_to(REPO_ROOT)))
    demo = yaml.safe_load((REPO_ROOT / "config/demo.yaml").read_text())
    for name in ("demo.yaml", demo["agent"]["roster_seed"]):
        add(REPO_ROOT / "config" / name, f"edge_agent/bundled/config/{name}")
    add(REPO_ROOT / "systemd/edge-agent.service", "edge_agent/bundled/systemd/edge-agent.service")
    for path in (REPO_ROOT / "docs").glob("*.md"):
        add(path, f"edge_agent/bundled/docs/{path.name}")
    return wanted


def check_wheel_contents(wheel: Path) -> None:
    """The wheel holds every file the agent reads at run time, as they are in the tree."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        wanted = run_time_files()
        assert "edge_agent/bundled/docs/OPERATIONS.md" in wanted and any(n.endswith(".onnx") for n in wanted)
        missing = sorted(name for name in wanted if name not in names)
        assert not missing, f"not in {wheel.name}: {missing}"
        # The very bytes of the tree, not an old copy.
        changed = [name for name, source in wanted.items() if archive.read(name) != source.read_bytes()]
        assert not changed, changed
        # And every module of every listed package.
        for package, folder in tree_packages().items():
            in_wheel = "/".join(package.split(".")) + "/"
            if package.startswith(BUNDLED_PACKAGE):
                continue
            for source in folder.glob("*.py"):
                assert in_wheel + source.name in names, f"{in_wheel}{source.name}"
        assert not [n for n in names if n.startswith("tests/")], "the tests stay out of the wheel"


def install_into_a_fresh_venv(wheel: Path, venv: Path) -> Path:
    """A fresh virtualenv outside the checkout with only the wheel (and its dependencies) in it."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--no-input", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        cwd=venv.parent,
        env=outside_env(),
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return venv


def outside_env() -> dict[str, str]:
    """The environment minus anything that would let the checkout's code leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PYTHONNOUSERSITE": "1"}


def check_install_service(installed: Path, tmp_path: Path) -> None:
    """``edge-agent install-service --prefix`` from the venv: the wheel's unit (running that venv's
    edge-agent), notes and demo configuration, and the credentials the demo needs named."""
    site_packages = next((installed / "lib").glob("python3*/site-packages"))
    where = subprocess.run(
        [str(installed / "bin/python"), "-c", "import edge_agent; print(edge_agent.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=outside_env(),
    )
    assert Path(where.stdout.strip()).is_relative_to(site_packages), "the agent runs from the wheel"

    root = tmp_path / "root"
    root.mkdir()
    binary = installed / "bin/edge-agent"
    done = subprocess.run(
        [str(binary), "install-service", "--prefix", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=outside_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bundled = site_packages / "edge_agent/bundled"
    unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    shipped = (bundled / "systemd/edge-agent.service").read_text()
    assert f"ExecStart={binary} run --config /etc/edge-agent/gateway.yaml" in unit
    assert unit == unit_exec_start(shipped, binary), "the shipped unit, running this venv's edge-agent"
    installed_notes = root / "usr/local/share/doc/edge-agent/OPERATIONS.md"
    assert installed_notes.read_bytes() == (bundled / "docs/OPERATIONS.md").read_bytes()
    gateway = root / "etc/edge-agent/gateway.yaml"
    assert gateway.read_bytes() == (bundled / "config/demo.yaml").read_bytes()
    seed = yaml.safe_load(gateway.read_text())["agent"]["roster_seed"]
    assert (root / "etc/edge-agent" / seed).is_file()
    # The demo has cameras with face analysis and the API on: both credentials are named.
    assert "fill the credential face_template_key" in done.stdout
    assert "fill the credential api_tokens" in done.stdout
    # Into a prefix, the unit runs this venv's edge-agent, which the prefix (an image) lacks: said so.
    assert f"install the agent where the unit runs it: {binary} inside {root}" in done.stdout


def wait_for_demo(collector: Collector, gateway_id: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def seen(messages: list[Received]) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        events = [m.json() for m in messages if "/events/" in m.topic and gateway_id in m.topic]
        # Recorded by the gateway's camera (the models run from the wheel), not a terminal's punch.
        by_face = [
            e
            for e in events
            if e["type"] == "edu.campus.attendance.recorded.v1"
            and e["data"]["method"] == "face"
            and "terminal_time" not in e["data"]
        ]
        intrusions = [
            e for e in events if e["type"] == "edu.campus.security.intrusion.v1" and e["data"]["snapshot"]
        ]
        snapshot_ids = {m.topic.rsplit("/", 1)[1] for m in messages if "/snapshots/" in m.topic}
        return bool(by_face) and any(e["id"] in snapshot_ids for e in intrusions)

    try:
        collector.wait_for(seen, timeout=DEMO_EVENTS_TIMEOUT_S)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{log.read_text()[-4000:]}") from None


def check_demo(installed: Path, tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """``edge-agent demo`` from the venv, in a directory outside the checkout: a face attendance
    event and an intrusion alert with its JPEG snapshot on the broker, every event valid, a clean
    stop on SIGTERM."""
    site_packages = next((installed / "lib").glob("python3*/site-packages"))
    demo = yaml.safe_load((site_packages / "edge_agent/bundled/config/demo.yaml").read_text())
    gateway_id = demo["gateway"]["id"]
    log = tmp_path / "demo.log"
    collector = Collector(mosquitto.url, "#")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(installed / "bin/edge-agent"),
                "demo",
                "--data-dir",
                str(tmp_path / "data"),
                "--mqtt-url",
                mosquitto.url,
                "--api-port",
                str(free_port()),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=outside_env(),
        )
        try:
            wait_for_demo(collector, gateway_id, proc, log)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # as systemd stops it
            code = proc.wait(timeout=60)
            collector.close()
    assert code == 0, log.read_text()[-4000:]

    events = [m.json() for m in collector.snapshot("/events/") if gateway_id in m.topic]
    for event in events:
        validate_event(event)
    intrusion = next(
        e for e in events if e["type"] == "edu.campus.security.intrusion.v1" and e["data"]["snapshot"]
    )
    (snapshot,) = {m.payload for m in collector.snapshot(f"/snapshots/{intrusion['id']}")}
    picture = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.size > 0, "the snapshot is a JPEG"


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + INSTALL_TIMEOUT_S + DEMO_EVENTS_TIMEOUT_S + 120)
def test_the_wheel_built_installed_and_run_outside_the_checkout(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # One test for the whole path, so that parallel workers never build and install it twice.
    (tmp_path / "dist").mkdir()
    wheel = build_wheel(tmp_path / "dist")
    check_wheel_contents(wheel)
    venv = install_into_a_fresh_venv(wheel, tmp_path / "venv")
    (tmp_path / "install").mkdir()
    check_install_service(venv, tmp_path / "install")
    (tmp_path / "demo").mkdir()
    check_demo(venv, tmp_path / "demo", mosquitto)

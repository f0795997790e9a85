"""A camera's zones redrawn in the administrator's configuration file: the drawing lands in that
camera's ``security``, every other line stays as it was (comments, layout, quoting), and the file
means what it meant apart from the drawing, whatever layout the camera's entry has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import (
    ConfigEditError,
    GatewayConfig,
    install_config,
    parse_config,
    pending_marker,
    previous_config,
    redraw_camera_zones,
    restore_previous_config,
    write_error_code,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = (REPO / "config" / "demo.yaml").read_text()

DRAWING: dict[str, Any] = {
    "reference_size": [640, 360],
    "zones": [{"id": "staff-car-park", "name": "Car park", "points": [[380, 190], [640, 190], [640, 360]]}],
    "lines": [{"id": "gate-line", "start": [300, 100], "end": [300, 300], "label_a_to_b": "in"}],
}


def drawing_of(config: GatewayConfig, camera_id: str) -> dict[str, Any]:
    setup = next(c for c in config.cameras if c.id == camera_id)
    assert setup.security is not None
    return {
        "reference_size": list(setup.security.reference_size) if setup.security.reference_size else None,
        "zones": [z.model_dump(mode="json", exclude_defaults=True) for z in setup.security.zones],
        "lines": [ln.model_dump(mode="json", exclude_defaults=True) for ln in setup.security.lines],
    }


def without_drawing(config: GatewayConfig, camera_id: str) -> dict[str, Any]:
    """The configuration as data, the camera's drawing left out."""
    data = config.model_dump(mode="json")
    for camera in data["cameras"]:
        if camera["device"]["id"] == camera_id and camera["security"] is not None:
            for key in ("reference_size", "zones", "lines"):
                camera["security"].pop(key)
    return data


def test_the_demo_file_changes_only_in_the_lines_of_the_drawing() -> None:
    after = redraw_camera_zones(DEMO, "courtyard-cam", DRAWING).splitlines()
    lines = DEMO.splitlines()
    at = lines.index("      reference_size: [1280, 720]  # the zone is drawn in pixels of a 1280x720 picture")
    assert lines[at + 1 : at + 3] == [
        "      zones:",
        "        - {id: staff-car-park, points: [[760, 380], [1280, 380], [1280, 720], [760, 720]]}",
    ]
    assert after[at : at + 5] == [
        "      reference_size: [640, 360]",
        "      zones:",
        "        - {id: staff-car-park, name: Car park, points: [[380, 190], [640, 190], [640, 360]]}",
        "      lines:",
        "        - {id: gate-line, start: [300, 100], end: [300, 300], label_a_to_b: in}",
    ]
    # Every other line, comments and all, as it was.
    assert after[:at] + after[at + 5 :] == lines[:at] + lines[at + 3 :]
    before, now = parse_config(DEMO), parse_config("\n".join(after))
    assert drawing_of(now, "courtyard-cam") == DRAWING
    assert without_drawing(now, "courtyard-cam") == without_drawing(before, "courtyard-cam")


LAYOUTS = {
    "block camera without security": """\
cameras:
  # the first camera
  - device: {kind: camera_sim, id: cam}
    idle_analysis_fps: 2   # a comment to keep
  # the next camera
  - device: {kind: camera_sim, id: other}
""",
    "last camera without security, no final newline": """\
cameras:
  - device: {kind: camera_sim, id: cam}
    idle_analysis_fps: 2""",
    "flow security": """\
cameras:
  - device: {kind: camera_sim, id: cam}
    security: {zones: [{id: old, points: [[0, 0], [9, 0], [9, 9]]}], reference_size: [10, 10]}  # keep
""",
    "flow camera": """\
cameras:
  - {device: {kind: camera_sim, id: cam}, idle_analysis_fps: 1}   # keep
""",
    "block security with comments inside and after": """\
cameras:
  - device:
      kind: camera_sim
      id: cam
    security:
      # about the zones: keep
      zones:
        - id: old
          points: [[0, 0], [9, 0], [9, 9]]   # the old zone
        # inside the old zones
      lines: []
      # about the pipeline: keep
      pipeline: {tamper: null}
agent: {log_level: info}  # keep
""",
    "empty security": """\
cameras:
  - device: {kind: camera_sim, id: cam}
    security:
    idle_analysis_fps: 2   # keep
""",
    "security that held only a drawing": """\
cameras:
  - device: {kind: camera_sim, id: cam}
    security:
      zones:
        - {id: old, points: [[0, 0], [9, 0], [9, 9]]}
""",
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("drawing", ["full", "empty"])
def test_every_layout_of_a_camera_takes_the_drawing_and_keeps_its_comments(layout: str, drawing: str) -> None:
    text = "gateway: {site: north, id: gw-1}\n" + LAYOUTS[layout]
    wanted = DRAWING if drawing == "full" else {"zones": [], "lines": []}
    after = redraw_camera_zones(text, "cam", wanted)
    now = parse_config(after)
    assert drawing_of(now, "cam") == {"reference_size": None, **wanted}
    before = parse_config(text)
    without = without_drawing(now, "cam")
    old = without_drawing(before, "cam")
    if next(c for c in before.cameras if c.id == "cam").security is None:
        # A camera without security gets one holding the drawing and nothing else.
        camera = next(c for c in without["cameras"] if c["device"]["id"] == "cam")
        camera["security"] = None
    assert without == old
    kept = [line.strip() for line in text.splitlines() if "keep" in line or line.strip().startswith("# the")]
    for line in kept:
        assert any(line.split("#")[1] in after_line for after_line in after.splitlines()), line
    assert "inside the old zones" not in after and "the old zone" not in after


def test_a_camera_not_in_the_file_and_a_file_that_is_not_yaml_are_refused() -> None:
    with pytest.raises(ConfigEditError) as missing:
        redraw_camera_zones(DEMO, "no-such-cam", DRAWING)
    assert missing.value.code == "camera_not_in_config"
    with pytest.raises(ConfigEditError) as broken:
        redraw_camera_zones("cameras: [\n", "cam", DRAWING)
    assert broken.value.code == "config_unreadable"
    # YAML, but a tag no safe loader constructs: refused as unreadable, not a server error.
    tagged = "cameras:\n  - device: {kind: camera_sim, id: cam}\n    x: !!python/name:os.system\n"
    with pytest.raises(ConfigEditError) as unsafe:
        redraw_camera_zones(tagged, "cam", DRAWING)
    assert unsafe.value.code == "config_unreadable"


point = st.tuples(st.integers(0, 640), st.integers(0, 360)).map(list)


@st.composite
def drawings(draw: st.DrawFn) -> dict[str, Any]:
    zones = []
    for k in range(draw(st.integers(0, 3))):
        x, y, w, h = (
            draw(st.integers(0, 500)),
            draw(st.integers(0, 250)),
            draw(st.integers(5, 140)),
            draw(st.integers(5, 110)),
        )
        zones.append({"id": f"z{k}", "points": [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]})
    lines = [
        {"id": f"l{k}", "start": start, "end": end}
        for k, (start, end) in enumerate(draw(st.lists(st.tuples(point, point), max_size=2)))
        if start != end
    ]
    return {"reference_size": [640, 360], "zones": zones, "lines": lines}


SHARED = {
    "alias": """
cameras:
  - device: {kind: camera_sim, id: cam-a}
    security: &yard
      zones: [{id: yard, points: [[0, 0], [9, 0], [9, 9]]}]
  - device: {kind: camera_sim, id: cam}
    security: *yard
""",
    "anchor owner": """
cameras:
  - device: {kind: camera_sim, id: cam}
    security: &yard
      zones: [{id: yard, points: [[0, 0], [9, 0], [9, 9]]}]
  - device: {kind: camera_sim, id: cam-b}
    security: *yard
""",
}


@pytest.mark.parametrize("layout", list(SHARED))
def test_zones_the_file_shares_with_another_camera_are_not_redrawn_there(layout: str) -> None:
    """Through an anchor the two cameras' zones are the same lines of the file: a splice for one
    would redraw the other's too. Refused, whichever of the two is drawn on."""
    text = "gateway: {site: north, id: gw-1}\n" + SHARED[layout]
    parse_config(text)  # a valid file
    with pytest.raises(ConfigEditError) as shared:
        redraw_camera_zones(text, "cam", DRAWING)
    assert shared.value.code == "config_layout" and "anchor" in str(shared.value)


def test_a_file_with_windows_line_endings_keeps_them() -> None:
    text = "gateway: {site: north, id: gw-1}\n" + LAYOUTS[next(iter(LAYOUTS))]
    crlf = text.replace("\n", "\r\n")
    after = redraw_camera_zones(crlf, "cam", DRAWING)
    assert "\n" not in after.replace("\r\n", "")
    assert drawing_of(parse_config(after), "cam") == drawing_of(
        parse_config(redraw_camera_zones(text, "cam", DRAWING)), "cam"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawing=drawings(), camera=st.sampled_from(["courtyard-cam", "classroom-7a-cam"]))
def test_any_drawing_on_either_demo_camera_means_exactly_the_drawing(
    drawing: dict[str, Any], camera: str
) -> None:
    after = redraw_camera_zones(DEMO, camera, drawing)
    if camera == "classroom-7a-cam":
        # Its camera has no security: only the drawing of a new one, and no rule to keep.
        assert yaml.safe_load(after)["cameras"][0]["security"]["zones"] == drawing["zones"]
        return
    try:
        now = parse_config(after)
    except Exception as err:
        # The demo's rules name staff-car-park: a drawing without it is refused by the loader, as
        # the editor reports; anything else is the splice's fault.
        assert "staff-car-park" in str(err) and all(z["id"] != "staff-car-park" for z in drawing["zones"])
        return
    assert drawing_of(now, camera) == drawing
    assert without_drawing(now, camera) == without_drawing(parse_config(DEMO), camera)


def test_installing_a_file_keeps_the_previous_one_beside_it_and_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("first\n")
    path.chmod(0o640)
    previous = install_config(path, "second\n")
    assert previous == previous_config(path) and previous.read_text() == "first\n"
    assert path.read_text() == "second\n"
    # The administrator's mode stays (a new file would get the umask's 0644).
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.yaml", "agent.yaml.previous"]


def test_a_linked_file_is_replaced_behind_its_link_and_put_back_there(tmp_path: Path) -> None:
    """docs/OPERATIONS.md: the file in a directory the agent may write, linked from where the unit
    reads it. Installing and rolling back replace the file, never the link (a link replaced by a
    file would leave the writable copy behind), and what is kept beside it is beside the file."""
    site = tmp_path / "site"
    site.mkdir()
    real = site / "agent.yaml"
    first, second = "gateway: {site: north, id: gw-1}\n", "gateway: {site: north, id: gw-1}\nagent: {}\n"
    real.write_text(first)
    link = tmp_path / "agent.yaml"
    link.symlink_to(Path("site") / "agent.yaml")  # relative, as `ln -s site/agent.yaml` makes it
    previous = install_config(link, second)
    assert link.is_symlink() and link.readlink() == Path("site") / "agent.yaml"
    assert real.read_text() == second and link.read_text() == second
    assert previous == site / "agent.yaml.previous" == previous_config(link)
    assert pending_marker(link) == site / "agent.yaml.pending"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.yaml", "site"]
    assert sorted(p.name for p in site.iterdir()) == ["agent.yaml", "agent.yaml.previous"]
    assert restore_previous_config(link)
    assert link.is_symlink() and real.read_text() == first
    assert not previous.exists()
    assert not restore_previous_config(link)  # nothing kept any more


def test_a_file_the_agent_may_not_write_is_told_apart_from_a_failed_write() -> None:
    import errno

    for code in (errno.EROFS, errno.EACCES, errno.EPERM):
        assert write_error_code(OSError(code, "no")) == "config_read_only"
    for code in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
        assert write_error_code(OSError(code, "no")) == "write_failed"


def test_the_previous_file_is_on_the_disk_before_the_new_one_replaces_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut cannot be made here, so this records what reaches the disk, in order: the new
    file and the kept previous one are fsynced before the rename, and the directory after it (a
    previous file still in the page cache at a power cut would come back empty, and the probation
    would roll back to it)."""
    import os

    path = tmp_path / "agent.yaml"
    path.write_text("first\n")
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source: Any, target: Any) -> None:
        synced.append(f"rename {os.path.basename(source)}")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    install_config(path, "second\n")
    assert synced == ["agent.yaml.pushed", "agent.yaml.previous", "rename agent.yaml.pushed", tmp_path.name]


def test_a_previous_file_that_does_not_load_is_not_put_back(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("gateway: {site: north, id: gw-1}\n")
    install_config(path, "gateway: {site: north, id: gw-1}\nagent: {log_level: debug}\n")
    pushed = path.read_text()
    for damage in (b"gateway: [damaged\n", b"\x00\xff\xfe garbage after a power cut"):
        previous_config(path).write_bytes(damage)
        assert not restore_previous_config(path)
        assert path.read_text() == pushed and previous_config(path).exists()

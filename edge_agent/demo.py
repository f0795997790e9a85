"""What ``edge-agent demo`` adds to the demo configuration before it runs the agent.

The demo shows the whole mission on any machine: card readers and a turnstile (simulated in
``config/demo.yaml``), and two simulated cameras whose clips are built here, once, from the scene
photos the project ships (:mod:`vision.scenes`, MIT, see its ``NOTICE.md``):

* the classroom camera (:data:`CLASSROOM_CAMERA`): an empty room, then two enrolled 7A students walk
  in with someone the gateway does not know (face attendance and a ``security.stranger`` alert);
* the courtyard camera (:data:`COURTYARD_CAMERA`): an empty courtyard, then a person walks into the
  restricted zone and stands there a few seconds (a ``security.intrusion`` alert with its snapshot).

Both clips end with a long still stretch, so the cameras' idle analysis rate is exercised too.

Everything is written into the agent's data dir, never beside the code (the demo runs from an
installed wheel as well): the clips (:data:`CLIP_DIR`), and the throwaway face-template key
(:data:`DEMO_KEY_FILE`) that encrypts the demo students' templates, generated at the first start and
reused after it, and the throwaway centre key (:data:`DEMO_CENTRE_KEY_FILE`) the demo's roster
messages are signed with. The students are enrolled through :meth:`edge_agent.faces.FaceService.enroll`, the
code ``edge-agent enroll`` uses, from crops of the same photos.

Rules whose schedule is not armed right now (the courtyard rule is for after hours) are armed for
the run, and each one is named in a printed line; :func:`prepare_demo` with ``real_schedules=True``
keeps them as configured.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from edge_agent.config import GatewayConfig
from edge_agent.config.cameras import CameraSetup, RuleSchedule
from edge_agent.resources import project_file
from edge_agent.secrets import credential_env_name, read_credential
from sync import move_aside

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision import FaceDetector

    Image = npt.NDArray[np.uint8]

DEMO_CONFIG = project_file("config", "demo.yaml")
"""The demo configuration: in the checkout, or in the installed wheel's bundled copy."""

CLASSROOM_CAMERA = "classroom-7a-cam"
COURTYARD_CAMERA = "courtyard-cam"

CLIP_DIR = "demo-clips"
"""Under the data dir: the clips built at the first start."""
CLIP_VERSION = 4
"""Part of each clip's file name: a change to how a clip is built must raise it, so that data dirs of
earlier demo runs build the new clip instead of playing the old one."""
DEMO_CENTRE_KEY_FILE = "demo-centre-signing.pem"
"""Under the data dir: the private half of the demo's throwaway centre key, which signs roster
messages for the demo (only used when no real ``roster_keys`` credential is set)."""
DEMO_CENTRE_KEY_ID = "demo-centre"
DEMO_KEY_FILE = "demo-face-template.key"
"""Under the data dir: the throwaway key of the demo's face templates (only used when no real
``face_template_key`` credential is set)."""

# The rate each camera analyses at (demo.yaml): every frame of a file is decoded, so a clip faster
# than its camera's analysis rate would only add decoding. The classroom's walks are 40 frames long,
# as in the tests, at half their frame rate: slower walks, the same steps from frame to frame.
CLASSROOM_FPS = 5.0
COURTYARD_FPS = 5.0
STILL_S = 12.0
LINGER_S = 4.0
"""How long the courtyard's person stands in the staff car park before the picture is empty again."""
"""The still stretches at the start and the end of each clip: each longer than the demo cameras'
``idle_after_s`` (10 s), so each camera goes to its idle analysis rate before people walk in, and
is back at its full rate for them. A pass of a clip takes 30 to 40 s, longer than the demo rules'
cooldowns: every pass shows its alerts again."""


@dataclass(frozen=True)
class DemoFace:
    """A face in a shipped scene photo: the ``index``-th face from the left that CenterFace finds."""

    photo: str
    index: int


# The choices tests/agent/test_face_attendance.py makes, known to work with the shipped models:
# alice (sample6, face 3) and carol (sample3, face 0) are enrolled, bob (sample5, face 1) is not.
ENROLLED_FACES: dict[str, DemoFace] = {
    "S1001": DemoFace("sample6.jpg", 3),
    "S1002": DemoFace("sample3.jpg", 0),
}
"""The demo roster's students whose faces the classroom camera sees, and the photo each is cut from."""
STRANGER_FACE = DemoFace("sample5.jpg", 1)
"""Not in the roster: the classroom camera raises ``security.stranger`` for this face."""


def say(line: str) -> None:
    """One line for the person who started the demo (stderr, like the rest of the demo's notes)."""
    print(f"edge-agent demo: {line}", file=sys.stderr, flush=True)


def _face_box(detector: FaceDetector, image: Image, face: DemoFace) -> tuple[float, float, float, float]:
    faces = sorted(detector.detect(image), key=lambda f: f.box[0])
    if len(faces) <= face.index:
        raise RuntimeError(f"{face.photo}: {len(faces)} faces found, face {face.index} wanted")
    return faces[face.index].box


def _face_crop(detector: FaceDetector, face: DemoFace, margin: float) -> Image:
    from vision import crop_around, load_photo

    image = load_photo(face.photo)
    return crop_around(image, _face_box(detector, image, face), margin)


def enrollment_photo(person_id: str, detector: FaceDetector | None = None) -> bytes:
    """The JPEG the demo enrolls for ``person_id`` (a key of :data:`ENROLLED_FACES`): a
    head-and-shoulders crop of the shipped photo, as an operator would cut one."""
    import cv2

    from vision import FaceDetector

    ok, jpeg = cv2.imencode(".jpg", _face_crop(detector or FaceDetector(), ENROLLED_FACES[person_id], 1.0))
    if not ok:
        raise RuntimeError(f"cannot encode the enrollment photo of {person_id}")
    return bytes(jpeg.tobytes())


def classroom_frames(detector: FaceDetector) -> Iterator[Image]:
    """An empty classroom; S1001 walks in beside the stranger, then S1002 on her own; a still end.

    Frames are made as the writer takes them: a whole 720p clip in memory would be about 900 MB."""
    import cv2
    import numpy as np

    from vision import load_photo, realistic_variants, walking_clip

    def walker(face: DemoFace, variant: str) -> Image:
        # Half size and a camera-like change (tilt, compression): not the enrollment photo itself.
        small = cv2.resize(realistic_variants(_face_crop(detector, face, 0.6))[variant], None, fx=0.5, fy=0.5)
        return np.asarray(small, np.uint8)

    room = np.asarray(cv2.resize(load_photo("sample1.jpg")[760:, :], (1280, 720)), np.uint8)
    first = walker(ENROLLED_FACES["S1001"], "rotate_6")
    second = walker(ENROLLED_FACES["S1002"], "jpeg_40")
    stranger = walker(STRANGER_FACE, "jpeg_40")
    walk = 40
    yield from walking_clip(
        room,
        [first, stranger],
        frames=walk,
        paths=[((150, 300), (1100, 380)), ((1150, 420), (250, 330))],
        still_frames=round(STILL_S * CLASSROOM_FPS),
    )
    yield from walking_clip(
        room, [second], frames=walk, paths=[((1150, 380), (200, 330))], still_frames=round(CLASSROOM_FPS)
    )
    yield from itertools.repeat(room, round(STILL_S * CLASSROOM_FPS))


def courtyard_frames() -> Iterator[Image]:
    """An empty courtyard; a person walks from the left into the restricted zone on the right; a still
    end. The walk and the sprite size are those of tests/agent/test_security_agent.py."""
    from vision import SPRITE_HEIGHT, WalkerPath, corridor_background, linear_path, person_sprite
    from vision import walk_clip as compose

    background = corridor_background()
    walk = linear_path((120, 600), (1100, 600), 20)
    yield from itertools.repeat(background, round(STILL_S * COURTYARD_FPS))
    frames = compose(background, [WalkerPath(person_sprite("figure"), walk, SPRITE_HEIGHT["figure"])], 25)
    for frame in frames:
        yield frame.frame
    # The person stays in the car park a while before leaving the picture: walking through, they
    # are in the zone for under 2 s, which a slow or busy box analyses in fewer frames than the
    # zone's inertia needs, and the alert would wait for the next pass of the clip.
    yield from itertools.repeat(frames[-1].frame, round(LINGER_S * COURTYARD_FPS))
    yield from itertools.repeat(background, round(STILL_S * COURTYARD_FPS))


def _frames_in(path: Path) -> int:
    """How many frames a clip file holds by its index (0 for a file that does not open as a video)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()


def _build_clip(path: Path, frames: Callable[[], Iterable[Image]], fps: float) -> Path:
    from vision import write_video

    if path.is_file():
        if _frames_in(path) > 0:
            return path
        say(f"the clip {path} does not play; building it again")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: a demo stopped while writing leaves no half clip to play next time.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    written = 0

    def counted() -> Iterator[Image]:
        nonlocal written
        for frame in frames():
            written += 1
            yield frame

    write_video(counted(), partial, fps=fps)
    # OpenCV's writer reports no write errors (a full disk): read the clip back before keeping it.
    if _frames_in(partial) != written:
        partial.unlink(missing_ok=True)
        raise OSError(f"the clip {path} could not be written whole ({written} frames; is the disk full?)")
    os.replace(partial, path)
    say(f"built the {path.stem.split('.')[0]} clip: {path}")
    return path


CLIPS_NEED_BYTES = 64 << 20
"""Free space asked for before the clips are built: they take about 30 MB, the agent's stores the rest."""


def build_clips(data_dir: Path) -> dict[str, Path]:
    """The demo cameras' clips in ``data_dir``, built at the first start and reused after it."""
    from vision import FaceDetector

    clips = data_dir / CLIP_DIR
    clips.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(clips).free
    if not any(clips.glob("*.avi")) and free < CLIPS_NEED_BYTES:
        raise OSError(
            f"the demo clips need about {CLIPS_NEED_BYTES >> 20} MB in {clips}, and {free >> 20} MB are free"
        )
    detector: FaceDetector | None = None

    def classroom() -> Iterator[Image]:
        nonlocal detector
        detector = detector or FaceDetector()
        return classroom_frames(detector)

    return {
        CLASSROOM_CAMERA: _build_clip(
            clips / f"{CLASSROOM_CAMERA}.v{CLIP_VERSION}.avi", classroom, CLASSROOM_FPS
        ),
        COURTYARD_CAMERA: _build_clip(
            clips / f"{COURTYARD_CAMERA}.v{CLIP_VERSION}.avi", courtyard_frames, COURTYARD_FPS
        ),
    }


def _plays_demo_clip(setup: CameraSetup) -> bool:
    """A demo camera (by id) simulated without a video of its own."""
    return (
        setup.id in (CLASSROOM_CAMERA, COURTYARD_CAMERA)
        and setup.device.kind == "camera_sim"
        and not setup.device.video
    )


def use_clips(config: GatewayConfig, clips: dict[str, Path]) -> GatewayConfig:
    """``config`` with each demo camera (a ``camera_sim`` without a video of its own) playing its clip."""
    cameras: list[CameraSetup] = []
    for setup in config.cameras:
        clip = clips.get(setup.id)
        if clip is not None and _plays_demo_clip(setup):
            setup = setup.model_copy(update={"device": setup.device.model_copy(update={"video": str(clip)})})
        cameras.append(setup)
    return config.model_copy(update={"cameras": cameras})


def demo_template_key(config: GatewayConfig, data_dir: Path) -> str | None:
    """Make the face-template key available to the agent: the configured credential when there is
    one (returns None), else the demo's throwaway key from ``data_dir`` (generated there at the first
    start, printed, and put in the environment for this process). Returns the key it set.

    The demo's templates are as throwaway as its key: when the key file is damaged, or gone while
    templates made under it are still there, those templates are moved aside (never mixed with new
    ones under another key) and the students are enrolled again under a new key.
    """
    from edge_agent.face_templates import FACES_DB, TemplateKeyError, parse_key

    name = config.faces.template_key_credential
    if read_credential(name):
        return None
    path = data_dir / DEMO_KEY_FILE
    gallery = data_dir / FACES_DB
    if path.is_file():
        key = path.read_text().strip()
        try:
            parse_key(key, name)
        except TemplateKeyError as err:
            kept = move_aside(path, datetime.now(UTC))
            say(f"the demo key in {path} is damaged ({err}); moved it to {kept}")
        else:
            say(f"face templates: reusing the demo key in {path}")
            os.environ[credential_env_name(name)] = key
            return key
    if gallery.exists():
        kept = move_aside(gallery, datetime.now(UTC))
        say(
            f"the demo's face templates in {gallery} were made under a key that is gone: moved them to "
            f"{kept}; the students are enrolled again under a new key"
        )
    key = secrets.token_hex(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    say(
        f"face templates: generated a throwaway demo key {key} (kept in {path}; for this demo only, "
        f"a real gateway gets its own {name!r} credential)"
    )
    os.environ[credential_env_name(name)] = key
    return key


def enroll_demo_faces(config: GatewayConfig, data_dir: Path, config_path: Path) -> list[str]:
    """Enroll the demo students (:data:`ENROLLED_FACES`) who have no template yet, with the code
    ``edge-agent enroll`` uses; the roster seed is applied first when the roster is still empty.
    Returns the ids of the people enrolled now (none on a later start)."""
    from edge_agent.face_templates import FaceTemplateStore, parse_key
    from edge_agent.faces import FaceService
    from edge_agent.roster import Roster
    from edge_agent.roster_sync import seed_roster

    settings = config.faces
    key = parse_key(read_credential(settings.template_key_credential), settings.template_key_credential)
    data_dir.mkdir(parents=True, exist_ok=True)
    roster = Roster(data_dir)
    store = FaceTemplateStore(data_dir, key)
    enrolled: list[str] = []
    try:
        have = {t.person_id for t in store.templates()}
        wanted = [pid for pid in ENROLLED_FACES if pid not in have]
        if not wanted:
            return []
        asyncio.run(seed_roster(roster, config.agent.roster_seed, config_path))
        missing = [pid for pid in wanted if pid not in roster.index.persons]
        if missing:
            say(
                f"not enrolling {', '.join(missing)}: not in the roster "
                "(is agent.roster_seed the demo roster?)"
            )
        to_enroll = [pid for pid in wanted if pid not in missing]
        if not to_enroll:
            return []
        service = FaceService(store, settings)
        for person_id in to_enroll:
            photo = (ENROLLED_FACES[person_id].photo, enrollment_photo(person_id, service.detector))
            outcome = service.enroll(person_id, [photo], roster.index)
            for name, code, message in outcome.rejected:
                say(f"enrolling {person_id} from {name} failed: {code}: {message}")
            if outcome.stored:
                enrolled.append(person_id)
        if enrolled:
            names = ", ".join(f"{pid} ({roster.index.persons[pid].name})" for pid in enrolled)
            say(f"enrolled the faces of {names} from the shipped scene photos")
    finally:
        store.close()
        roster.close()
    return enrolled


def _describe(schedule: RuleSchedule) -> str:
    windows = ", ".join(f"{w.start}-{w.end}" for w in schedule.windows) or "all day"
    return f"{'/'.join(schedule.weekdays)} {windows}"


def arm_rules_now(config: GatewayConfig, now: datetime | None = None) -> GatewayConfig:
    """``config`` with a security rule armed now where a zone or line has none armed now.

    Rules watching the same zone (or line) of a camera are judged together: the courtyard's zone
    has one rule for weekday nights and one for weekends, and one of them armed is enough. Where
    none is, the first one loses its schedule for this run, and a printed line says so.
    """
    tz = ZoneInfo(config.gateway.timezone)
    local = (now or datetime.now(tz)).astimezone(tz)
    cameras: list[CameraSetup] = []
    for setup in config.cameras:
        security = setup.security
        if security is None:
            cameras.append(setup)
            continue
        rules = list(security.rules)
        watched: dict[tuple[str, str], list[int]] = {}
        for i, rule in enumerate(rules):
            target = getattr(rule, "zone", None) or getattr(rule, "line", None) or rule.id
            watched.setdefault((rule.kind, str(target)), []).append(i)
        for (kind, target), indexes in watched.items():
            if any(rules[i].schedule is None or rules[i].schedule.armed(local) for i in indexes):  # type: ignore[union-attr]
                continue
            first = rules[indexes[0]]
            assert first.schedule is not None
            say(
                f"rule {first.id} ({kind} in {target}, camera {setup.id}) is armed "
                f"{_describe(first.schedule)}, not now ({local:%a %H:%M} {tz.key}): armed for this demo "
                "run; --real-schedules keeps the schedule"
            )
            rules[indexes[0]] = first.model_copy(update={"schedule": None})
        cameras.append(setup.model_copy(update={"security": security.model_copy(update={"rules": rules})}))
    return config.model_copy(update={"cameras": cameras})


def demo_centre_key(config: GatewayConfig, data_dir: Path) -> Path | None:
    """Make the roster keys credential available to the agent: the configured one when there is one
    (returns None), else the public half of the demo's throwaway centre key, whose private half is
    kept in ``data_dir`` (:data:`DEMO_CENTRE_KEY_FILE`, made at the first start) so that roster
    changes can be signed and published to the demo (``edge-agent central roster publish --key-file``
    it ``--key-id`` :data:`DEMO_CENTRE_KEY_ID`). Without it the agent would refuse every roster
    message, as a real gateway without the centre's key does. Returns the private key file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
        load_pem_private_key,
    )

    name = config.agent.roster_keys_credential
    if read_credential(name):
        return None
    path = data_dir / DEMO_CENTRE_KEY_FILE
    key: Ed25519PrivateKey | None = None
    if path.is_file():
        try:
            loaded = load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as err:
            kept = move_aside(path, datetime.now(UTC))
            say(f"the demo centre key in {path} is damaged ({err}); moved it to {kept}")
        else:
            if isinstance(loaded, Ed25519PrivateKey):
                key = loaded
            else:
                kept = move_aside(path, datetime.now(UTC))
                say(f"the demo centre key in {path} is not an Ed25519 key; moved it to {kept}")
    if key is None:
        key = Ed25519PrivateKey.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        say(
            f"roster: generated a throwaway demo centre key {DEMO_CENTRE_KEY_ID!r} (private key in {path}); "
            f"a real gateway trusts the centre's public key through its {name!r} credential"
        )
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    trusted = {"keys": [{"id": DEMO_CENTRE_KEY_ID, "algorithm": "ed25519", "public_key": public}]}
    os.environ[credential_env_name(name)] = json.dumps(trusted)
    return path


def prepare_demo(config: GatewayConfig, config_path: Path, *, real_schedules: bool = False) -> GatewayConfig:
    """The demo configuration ready to run: clips built (or reused) in the data dir, the face key in
    place, the demo students enrolled, and (unless ``real_schedules``) every watched zone armed now."""
    data_dir = Path(config.agent.data_dir)
    demo_centre_key(config, data_dir)
    if any(_plays_demo_clip(s) for s in config.cameras):
        config = use_clips(config, build_clips(data_dir))
    if any(s.face is not None for s in config.cameras):
        demo_template_key(config, data_dir)
        enroll_demo_faces(config, data_dir, config_path)
    if not real_schedules:
        config = arm_rules_now(config)
    return config


__all__ = [
    "CLASSROOM_CAMERA",
    "CLIP_DIR",
    "COURTYARD_CAMERA",
    "DEMO_CENTRE_KEY_FILE",
    "DEMO_CENTRE_KEY_ID",
    "DEMO_CONFIG",
    "DEMO_KEY_FILE",
    "ENROLLED_FACES",
    "STRANGER_FACE",
    "arm_rules_now",
    "build_clips",
    "demo_centre_key",
    "demo_template_key",
    "enroll_demo_faces",
    "enrollment_photo",
    "prepare_demo",
    "use_clips",
]

"""Every shipped firmware profile validates, and its golden frames decode and re-encode exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from device_drivers.errors import DeviceError, IncompleteFrame, MalformedFrame, ProfileError
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.loader import load_profile, parse_profile, resolve_profile
from device_drivers.registry import codec_for
from firmware_profiles import profile_paths

PROFILES = profile_paths()


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_profiles_are_shipped() -> None:
    families = {load_profile(p).family for p in PROFILES}
    assert families == {"card_reader", "wiegand_converter", "turnstile"}
    assert len(PROFILES) >= 7


@pytest.mark.parametrize("path", PROFILES, ids=_ids(PROFILES))
def test_profile_id_is_file_stem(path: Path) -> None:
    assert load_profile(path).id == path.stem
    assert resolve_profile(path.stem) == path


@pytest.mark.parametrize("path", PROFILES, ids=_ids(PROFILES))
def test_golden_frames_decode_and_reencode(path: Path) -> None:
    profile = load_profile(path)
    codec = codec_for(profile)
    for golden in profile.golden:
        value, consumed = codec.decode(golden.hex)
        assert consumed == len(golden.hex), golden.note
        fields = dataclasses.asdict(value)
        for key, expected in golden.expect.items():
            assert fields[key] == expected, f"{path.name} {golden.hex.hex(' ')}: {key}"
        assert codec.encode(value) == golden.hex


@pytest.mark.parametrize("path", PROFILES, ids=_ids(PROFILES))
def test_golden_frames_back_to_back_and_split(path: Path) -> None:
    """All golden frames in one stream decode in order, also when fed one byte at a time."""
    profile = load_profile(path)
    codec = codec_for(profile)
    stream = b"".join(g.hex for g in profile.golden)
    expected = [codec.decode(g.hex)[0] for g in profile.golden]
    decoded = []
    buffer = bytearray()
    for byte in stream:
        buffer.append(byte)
        while buffer:
            try:
                value, consumed = codec.decode(buffer)
            except IncompleteFrame:
                break
            del buffer[:consumed]
            decoded.append(value)
    assert decoded == expected
    assert not buffer


@pytest.mark.parametrize("path", PROFILES, ids=_ids(PROFILES))
def test_bad_frames_are_rejected_with_their_code(path: Path) -> None:
    profile = load_profile(path)
    codec = codec_for(profile)
    for bad in profile.bad_frames:
        with pytest.raises(MalformedFrame) as err:
            codec.decode(bad.hex)
        assert err.value.code == bad.error, f"{path.name} {bad.hex.hex(' ')}: {bad.note}"
        assert 1 <= err.value.consumed <= len(bad.hex)
        assert isinstance(err.value, DeviceError)


@pytest.mark.parametrize("path", PROFILES, ids=_ids(PROFILES))
def test_truncated_golden_frames_are_incomplete(path: Path) -> None:
    profile = load_profile(path)
    codec = codec_for(profile)
    for golden in profile.golden:
        for cut in range(1, len(golden.hex)):
            try:
                codec.decode(golden.hex[:cut])
            except IncompleteFrame:
                continue
            except MalformedFrame as err:
                # Protocols without markers may resynchronise on a prefix; they must still progress.
                assert profile.framing.start is None
                assert err.consumed >= 1
            else:
                raise AssertionError(f"{path.name}: {golden.hex[:cut].hex(' ')} decoded as a whole frame")


def _valid_text() -> str:
    return PROFILES[0].read_text()


def test_unknown_field_is_rejected_with_path_and_line(tmp_path: Path) -> None:
    text = _valid_text().replace("framing:\n", "framing:\n  stx_byte: 2\n", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(bad)
    message = str(err.value)
    line = text.splitlines().index("  stx_byte: 2") + 1
    assert f"bad.yaml:{line}: framing.stx_byte: Extra inputs are not permitted" in message
    assert err.value.code == "bad_profile"


def test_unknown_checksum_and_unquoted_hex(tmp_path: Path) -> None:
    text = _valid_text().replace("algorithm: xor", "algorithm: crc32").replace('start: "02"', "start: 02")
    with pytest.raises(ProfileError) as err:
        parse_profile(text, tmp_path / "x.yaml")
    message = str(err.value)
    assert "framing.checksum.algorithm" in message
    assert "framing.start: Value error, hex bytes must be a quoted string" in message


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid YAML"):
        parse_profile("a: [1, 2", tmp_path / "x.yaml")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")
    with pytest.raises(ProfileError, match="unknown firmware profile 'nope'"):
        resolve_profile("nope")


def test_family_section_must_match() -> None:
    text = _valid_text().replace("family: card_reader", "family: turnstile")
    with pytest.raises(ProfileError, match="family turnstile needs the `turnstile` section"):
        parse_profile(text)


def test_wiegand_layout_ranges_are_checked() -> None:
    text = next(p for p in PROFILES if p.stem == "wiegand_serial_converter").read_text()
    with pytest.raises(ProfileError, match=r"bit range \[9, 26\] outside a 26-bit frame"):
        parse_profile(text.replace("card_number: [9, 24]", "card_number: [9, 26]"))


def test_turnstile_needs_open_for_each_direction() -> None:
    text = next(p for p in PROFILES if p.stem == "turnstile_rs485_crc").read_text()
    with pytest.raises(ProfileError, match="no open command for direction exit"):
        parse_profile(text.replace("    - {name: open, direction: exit, code: 0x02}\n", ""))


def test_profile_model_is_frozen() -> None:
    profile = load_profile(PROFILES[0])
    assert isinstance(profile, FirmwareProfile)
    with pytest.raises(Exception, match="frozen"):
        profile.id = "x"  # type: ignore[misc]

"""Codecs: hypothesis round-trips, Wiegand parity, garbage and truncation fuzz."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_drivers.card.codec import CardCodec, CardData
from device_drivers.errors import IncompleteFrame, MalformedFrame
from device_drivers.profiles import wiegand
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.framing import drain
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.registry import codec_for
from device_drivers.turnstile.codec import TurnstileCodec, TurnstileMessage
from firmware_profiles import profile_paths

ALL = [load_profile(p) for p in profile_paths()]
EM4100 = [p for p in ALL if p.card is not None and p.card.format == "em4100"]
TURNSTILES = [p for p in ALL if p.family == "turnstile"]
WIEGAND = load_profile(resolve_profile("wiegand_serial_converter"))
UID = load_profile(resolve_profile("uid_line_reader"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ids(profiles: list[FirmwareProfile]) -> list[str]:
    return [p.id for p in profiles]


@pytest.mark.parametrize("profile", EM4100, ids=_ids(EM4100))
@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(payload=st.binary(min_size=5, max_size=5))
def test_em4100_round_trip(profile: FirmwareProfile, payload: bytes) -> None:
    codec = CardCodec(profile)
    card = codec.card_from_hex(payload.hex())
    frame = codec.encode(card)
    assert codec.decode(frame) == (card, len(frame))
    assert card.card_number == int.from_bytes(payload[1:], "big")
    assert card.facility_code == payload[0]
    assert card.credential == payload.hex().upper()


@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(uid=st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_uid_round_trip_and_lower_case_input(uid: bytes) -> None:
    codec = CardCodec(UID)
    card = codec.card_from_hex(uid.hex())
    frame = codec.encode(card)
    assert codec.decode(frame) == (card, len(frame))
    # Readers that send lower-case hex give the same credential.
    assert codec.decode(uid.hex().encode() + b"\r\n")[0] == card


@pytest.mark.parametrize(
    "layout", WIEGAND.wiegand.layouts if WIEGAND.wiegand else [], ids=lambda lay: lay.name
)
@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(data=st.data())
def test_wiegand_round_trip_and_single_bit_flips(layout: object, data: st.DataObject) -> None:
    from device_drivers.profiles.config import WiegandLayout

    assert isinstance(layout, WiegandLayout)
    codec = CardCodec(WIEGAND)
    fc_bits = layout.facility_code[1] - layout.facility_code[0] + 1 if layout.facility_code else 0
    cn_bits = layout.card_number[1] - layout.card_number[0] + 1
    facility = data.draw(st.integers(0, (1 << fc_bits) - 1))
    number = data.draw(st.integers(0, (1 << cn_bits) - 1))
    card = codec.card_from_fields(number, facility, layout.bits)
    frame = codec.encode(card)
    assert codec.decode(frame) == (card, len(frame))
    assert (card.facility_code, card.card_number, card.bits, card.card_format) == (
        facility,
        number,
        layout.bits,
        layout.name,
    )
    # Every bit of these layouts is under some parity bit: any single flip is caught.
    value = wiegand.unpack(bytes.fromhex(card.raw_hex), layout.bits)
    flip = data.draw(st.integers(0, layout.bits - 1))
    flipped = value ^ (1 << (layout.bits - 1 - flip))
    bad = CardData("x", layout.name, wiegand.pack(flipped, layout.bits).hex(), layout.bits)
    with pytest.raises(MalformedFrame) as err:
        codec.decode(codec.encode(bad))
    assert err.value.code == "parity"
    assert err.value.consumed == len(frame)


def test_wiegand_field_helpers() -> None:
    layout = CardCodec(WIEGAND).layout(26)
    value = wiegand.build(layout, 4567, 123)
    assert format(value, "026b") == "10111101100010001110101110"
    assert wiegand.field(value, 26, 1, 8) == 123
    assert wiegand.parity_errors(value, layout) == []
    with pytest.raises(ValueError, match="does not fit in 8 bits"):
        wiegand.build(layout, 1, 256)
    with pytest.raises(ValueError, match="no 30-bit layout"):
        CardCodec(WIEGAND).layout(30)


def _messages(codec: TurnstileCodec) -> st.SearchStrategy[TurnstileMessage]:
    spec = codec.spec
    options = []
    for kind, specs in (("command", spec.commands), ("event", spec.events)):
        for message in specs:
            directions: list[str | None] = [message.direction]
            if "{direction}" in message.tokens:
                directions = list(spec.directions)
            values = st.integers(0, 255) if "{value}" in message.tokens else st.none()
            for direction in directions:
                options.append(
                    values.map(
                        lambda v, k=kind, n=message.name, d=direction: TurnstileMessage(
                            k,
                            n,
                            d,
                            v,
                            codec.address,  # type: ignore[arg-type]
                        )
                    )
                )
    return st.one_of(options)


@pytest.mark.parametrize("profile", TURNSTILES, ids=_ids(TURNSTILES))
@settings(deadline=None)  # shared CI machine: no per-example time limit
@given(data=st.data())
def test_turnstile_round_trip(profile: FirmwareProfile, data: st.DataObject) -> None:
    codec = TurnstileCodec(profile)
    message = data.draw(_messages(codec))
    frame = codec.encode(message)
    assert codec.decode(frame) == (message, len(frame))


def test_turnstile_encode_refuses_what_the_profile_cannot_say() -> None:
    codec = TurnstileCodec(load_profile(resolve_profile("turnstile_stx_xor")))
    with pytest.raises(ValueError, match="open needs a direction"):
        codec.command("open")
    with pytest.raises(ValueError, match="needs a value"):
        codec.event("fault")
    assert codec.fault_name(2) == "sensor_blocked"
    assert codec.fault_name(0x7F) == "fault_0x7F"


def _golden_stream(profile: FirmwareProfile) -> bytes:
    return b"".join(g.hex for g in profile.golden)


@pytest.mark.parametrize("profile", ALL, ids=_ids(ALL))
@FUZZ
@given(noise=st.binary(max_size=200))
def test_decoding_random_bytes_always_progresses(profile: FirmwareProfile, noise: bytes) -> None:
    codec = codec_for(profile)
    buffer = bytearray(noise + _golden_stream(profile)[:7])
    for steps, _ in enumerate(drain(codec, buffer), 1):
        assert steps <= len(noise) + 7
    # Whatever remains is a possible frame start, shorter than the longest frame.
    assert len(buffer) < profile.framing.max_frame
    if buffer:
        with pytest.raises(IncompleteFrame):
            codec.decode(buffer)


@pytest.mark.parametrize("profile", ALL, ids=_ids(ALL))
@FUZZ
@given(noise=st.binary(min_size=1, max_size=40), cut=st.integers(1, 15))
def test_valid_frames_survive_garbage_and_a_cut_frame(
    profile: FirmwareProfile, noise: bytes, cut: int
) -> None:
    """Noise, then a frame cut short, then the golden frames: every golden frame is recovered."""
    codec = codec_for(profile)
    golden = [codec.decode(g.hex)[0] for g in profile.golden]
    first = profile.golden[0].hex
    if profile.framing.start is not None:
        # Noise without the start byte: a false start inside noise could legitimately swallow bytes.
        noise = noise.replace(profile.framing.start, b"")
        prefix = noise + first[: min(cut, len(first) - 1)]
    elif profile.framing.end is not None:
        noise = noise.replace(profile.framing.end, b"")
        prefix = noise + profile.framing.end
    else:
        # Without markers, noise can pass a one-byte checksum by chance (1 in 256 for sum8): such
        # protocols delimit frames by silence, and the driver drops a partial frame after a gap. So
        # the noise is decoded on its own, its remainder dropped as the driver does, then the frames.
        list(drain(codec, bytearray(noise)))
        prefix = b""
    buffer = bytearray(prefix + _golden_stream(profile))
    values = [v for v in drain(codec, buffer) if not isinstance(v, MalformedFrame)]
    assert values[-len(golden) :] == golden
    assert not buffer


def test_malformed_frame_must_consume() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        MalformedFrame("x", code="garbage", consumed=0)


def test_drain_reports_each_problem_once() -> None:
    profile = load_profile(resolve_profile("em4100_id12"))
    codec = CardCodec(profile)
    good = profile.golden[0].hex
    bad_sum = profile.bad_frames[0].hex
    buffer = bytearray(b"noise" + good + bad_sum + good + b"\x02\x36")
    out = list(drain(codec, buffer))
    codes = [v.code if isinstance(v, MalformedFrame) else "card" for v in out]
    assert codes == ["garbage", "card", "bad_checksum", "card"]
    assert bytes(buffer) == b"\x02\x36"

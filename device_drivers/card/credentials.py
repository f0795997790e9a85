"""How cards are written as text: the credential strings the roster stores, and the short form of a
demo card in a config (``sim_cards``). Pure stdlib, so config validators can use it."""

from __future__ import annotations


def normalise_hex(text: str) -> str:
    """A hex card number as the roster stores it: upper case, no separators (`62:e3 08` -> `62E308`)."""
    return "".join(ch for ch in text if ch not in " :-_.").upper()


def wiegand_credential(facility_code: int | None, card_number: int) -> str:
    """A Wiegand card as the roster stores it: `FC:NUMBER` in decimal, or `NUMBER` without a facility."""
    return str(card_number) if facility_code is None else f"{facility_code}:{card_number}"


def parse_wiegand_text(text: str) -> tuple[int | None, int, int]:
    """``FC:NUMBER`` or ``NUMBER``, optionally followed by ``/BITS`` (default 26), as
    ``(facility_code, card_number, bits)``; ``ValueError`` if it is not written so."""
    fields, _, bits = text.partition("/")
    facility, _, number = fields.rpartition(":")
    return (int(facility) if facility else None), int(number), int(bits or 26)


__all__ = ["normalise_hex", "parse_wiegand_text", "wiegand_credential"]

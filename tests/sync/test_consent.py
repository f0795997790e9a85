"""The biometric consent rule (``Person.consent_refusal``): who may consent, for what, and when."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from sync.messages import Person

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def person(consent: dict[str, Any] | None, born: date | None = None) -> Person:
    return Person.model_validate(
        {"id": "S1", "name": "Li Ming", "role": "student", "birth_date": born, "consent": consent}
    )


def consent(**changes: Any) -> dict[str, Any]:
    return {"granted_by": "self", "granted_at": "2026-09-01T00:00:00Z", "scopes": ["attendance"]} | changes


@pytest.mark.parametrize(
    ("record", "use", "why"),
    [
        (None, "attendance", "consent_missing"),
        (consent(), "attendance", None),
        (consent(), "access", "consent_scope"),
        (consent(scopes=["attendance", "access"]), "access", None),
        (consent(withdrawn_at="2026-12-01T00:00:00Z"), "attendance", "consent_withdrawn"),
        # A withdrawal dated ahead takes effect then, not before.
        (consent(withdrawn_at="2026-12-31T00:00:00Z"), "attendance", None),
        (consent(expires_at="2026-12-02T09:00:00Z"), "attendance", "consent_expired"),
        (consent(expires_at="2026-12-02T09:00:01Z"), "attendance", None),
        (consent(granted_at="2026-12-03T00:00:00Z"), "attendance", "consent_not_yet"),
    ],
)
def test_the_record_decides_each_use_at_each_moment(
    record: dict[str, Any] | None, use: str, why: str | None
) -> None:
    assert person(record).consent_refusal(use, NOW) == why  # type: ignore[arg-type]


def test_under_fourteen_only_a_guardian_consents() -> None:
    # Fourteen on 3 December 2026: the day before, their own consent does not count.
    assert person(consent(), born=date(2012, 12, 3)).consent_refusal("attendance", NOW) == (
        "consent_guardian_required"
    )
    assert person(consent(), born=date(2012, 12, 2)).consent_refusal("attendance", NOW) is None
    guardian = consent(granted_by="guardian", guardian_name="Li Hua")
    assert person(guardian, born=date(2016, 5, 1)).consent_refusal("attendance", NOW) is None
    # Born on 29 February: fourteen on 1 March of a common year.
    leap = person(consent(granted_at="2025-01-01T00:00:00Z"), born=date(2012, 2, 29))
    assert (
        leap.consent_refusal("attendance", datetime(2026, 2, 28, tzinfo=UTC)) == "consent_guardian_required"
    )
    assert leap.consent_refusal("attendance", datetime(2026, 3, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (consent(granted_by="guardian"), "names the guardian"),
        (consent(scopes=[]), "at least 1 item"),
        (consent(scopes=["attendance", "attendance"]), "listed twice"),
        (consent(scopes=["marketing"]), "'attendance' or 'access'"),
        (consent(granted_at="2026-09-01T00:00:00"), "timezone"),
    ],
)
def test_a_record_that_cannot_be_right_is_refused(record: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        person(record)

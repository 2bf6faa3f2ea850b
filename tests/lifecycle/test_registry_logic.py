"""Versions and the production stage's history: the pure part of the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from treesurv.lifecycle.registry import (
    ROLLBACK,
    Bump,
    RegistryError,
    StageEvent,
    bump,
    change_kind,
    current,
    next_version,
    parse_version,
    plain,
    previous,
    production_stack,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(n: int, version: str, assigned: bool = True, message: str = "") -> StageEvent:
    return StageEvent(n, version, assigned, f"tree-survival#prod#{n}", T0, message)


def rollback_event(n: int, version: str) -> StageEvent:
    return event(n, version, message=f"{ROLLBACK} from x to {version}")


def test_versions_parse_with_or_without_v() -> None:
    assert parse_version("v1.2.3") == (1, 2, 3)
    assert plain("v10.0.7") == "10.0.7"
    for bad in ("1.2", "one.two.three", "1.2.3.4", ""):
        with pytest.raises(RegistryError, match="not a version"):
            parse_version(bad)


def test_bumps_reset_the_lower_parts() -> None:
    assert bump("1.4.2", Bump.MAJOR) == "2.0.0"
    assert bump("1.4.2", Bump.MINOR) == "1.5.0"
    assert bump("1.4.2", Bump.PATCH) == "1.4.3"


def test_next_version_starts_at_params_and_bumps_the_highest_registered() -> None:
    assert next_version([], "1.0.0", Bump.MINOR) == "1.0.0"
    # After a rollback to 1.0.0 the next version still follows 1.2.0: never reused.
    assert next_version(["1.0.0", "1.2.0", "1.1.0"], "1.0.0", Bump.MINOR) == "1.3.0"
    assert next_version(["1.9.0", "1.10.0"], "1.0.0", Bump.PATCH) == "1.10.1"


def test_change_kind_follows_schema_then_data() -> None:
    base = {"schema": {"features": ["a"]}, "data": {"md5": "x"}}
    assert change_kind(base, None) is Bump.MINOR
    assert change_kind(dict(base), base) is Bump.PATCH
    assert change_kind({**base, "data": {"md5": "y"}}, base) is Bump.MINOR
    assert change_kind({"schema": {"features": ["a", "b"]}, "data": {"md5": "y"}}, base) is (
        Bump.MAJOR
    )


def test_current_is_the_latest_event_not_the_highest_version() -> None:
    assert current([]) is None
    events = [event(1, "1.0.0"), event(2, "1.1.0"), rollback_event(3, "1.0.0")]
    assert current(events) == "1.0.0"
    # Order of the list does not matter, the tag counter does.
    assert current(list(reversed(events))) == "1.0.0"
    assert current([*events, event(4, "1.0.0", assigned=False)]) is None


def test_previous_walks_back_through_promotions() -> None:
    events = [event(1, "1.0.0"), event(2, "1.1.0"), event(3, "1.2.0")]
    assert previous(events) == "1.1.0"
    events.append(rollback_event(4, "1.1.0"))
    assert production_stack(events) == ["1.0.0", "1.1.0"]
    # A second rollback goes further back instead of toggling to 1.2.0.
    assert previous(events) == "1.0.0"
    events.append(rollback_event(5, "1.0.0"))
    assert previous(events) is None


def test_a_manual_promotion_of_an_old_version_can_be_undone() -> None:
    events = [event(1, "1.0.0"), event(2, "1.1.0"), event(3, "1.0.0")]
    assert current(events) == "1.0.0"
    assert previous(events) == "1.1.0"


def test_first_version_has_nothing_before_it() -> None:
    assert previous([event(1, "1.0.0")]) is None
    assert previous([]) is None

"""The retention plan: never `latest`, never a version that was `latest` within the grace period."""

from datetime import UTC, datetime, timedelta

import pytest

from ofedrepo.errors import InvalidInput
from ofedrepo.repos.retention import Policy, VersionFacts, parse_age, plan_versions

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def versions(*ages_in_hours: float) -> list[VersionFacts]:
    """Versions 1, 2, ... published that many hours ago."""
    return [VersionFacts(number, NOW - ages_in_hours[number - 1] * HOUR) for number in range(1, len(ages_in_hours) + 1)]


def test_keep_the_newest_n() -> None:
    assert plan_versions(versions(50, 40, 30, 20), latest=4, policy=Policy(keep=2), now=NOW) == [1, 2]
    assert plan_versions(versions(50, 40, 30, 20), latest=4, policy=Policy(keep=1), now=NOW) == [1, 2, 3]


def test_latest_stays_even_when_it_is_not_the_highest() -> None:
    """A latest link a crash never switched points at an older number; that one stays."""
    assert plan_versions(versions(50, 40, 30, 20), latest=2, policy=Policy(keep=1), now=NOW) == [1, 3]


def test_a_version_that_was_latest_within_the_grace_period_stays() -> None:
    # Version 3 stopped being latest half an hour ago, when 4 appeared.
    assert plan_versions(versions(50, 40, 30, 0.5), latest=4, policy=Policy(keep=1), now=NOW) == [1, 2]
    no_grace = Policy(keep=1, grace=timedelta(0))
    assert plan_versions(versions(50, 40, 30, 0.5), latest=4, policy=no_grace, now=NOW) == [1, 2, 3]


def test_older_than_alone_and_with_keep() -> None:
    week = Policy(older_than=timedelta(days=7))
    assert plan_versions(versions(400, 200, 100, 20), latest=4, policy=week, now=NOW) == [1, 2]
    both = Policy(keep=3, older_than=timedelta(days=7))
    assert plan_versions(versions(400, 200, 100, 20), latest=4, policy=both, now=NOW) == [1]


def test_policies_must_say_something() -> None:
    with pytest.raises(InvalidInput, match="--keep N and/or --older-than"):
        Policy()
    with pytest.raises(InvalidInput, match="at least 1"):
        Policy(keep=0)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("30d", 2592000),
                                               ("2w", 1209600), ("3", 259200)])  # fmt: skip
def test_ages(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "-3d", "1.5h", "30y", "9999999d", "3 days"])
def test_bad_ages(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not an age"):
        parse_age(text)

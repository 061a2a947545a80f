"""An empty date range matches nothing: Filters say which one (the API and the CLI word it)."""

from __future__ import annotations

from datetime import datetime

import pytest

from mmrag.search.query import EmptyRange, Filters


def day(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_open_and_proper_ranges_pass() -> None:
    Filters().check_ranges()
    Filters(since=day("2024-06-01")).check_ranges()
    Filters(since=day("2024-05-01"), until=day("2024-06-01")).check_ranges()
    # modification dates are instants: 10:00 at +02:00 is 08:00 UTC, before 09:00 UTC
    Filters(since=day("2024-06-01T10:00+02:00"), until=day("2024-06-01T09:00+00:00")).check_ranges()


def test_an_empty_range_names_its_fields_and_dates() -> None:
    with pytest.raises(EmptyRange) as caught:
        Filters(since=day("2024-06-01"), until=day("2024-06-01")).check_ranges()
    found = caught.value
    assert (found.first, found.last) == ("since", "until")
    assert (found.start, found.end) == (day("2024-06-01"), day("2024-06-01"))


def test_taken_dates_compare_on_the_cameras_wall_clock() -> None:
    since, until = day("2024-06-01T10:00+02:00"), day("2024-06-01T10:00")
    with pytest.raises(EmptyRange) as caught:
        Filters(taken_since=since, taken_until=until).check_ranges()
    assert (caught.value.first, caught.value.last) == ("taken_since", "taken_until")
    Filters(taken_since=day("2024-06-01T09:59+00:00"), taken_until=until).check_ranges()

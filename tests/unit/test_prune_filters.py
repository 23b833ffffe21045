"""cnm_prune's filters: Docker's label, label! and until, parsed before anything runs."""
import datetime

import pytest

from ansible_collections.cnm.core.plugins.module_utils.controller.prune import prune_spec
from ansible_collections.cnm.core.plugins.module_utils.controller.prune_filters import (
    PruneFilter, parse_created, parse_duration, parse_filters, parse_label,
    parse_timestamp, parse_until)
from ansible_collections.cnm.core.plugins.module_utils.errors import ValidationError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
FIELD = "networks_filters"


def until(value):
    return parse_until(value, FIELD + ".until", NOW)


@pytest.mark.parametrize("text, seconds", [
    ("24h", 86400), ("1h30m", 5400), ("10m", 600), ("90s", 90), ("1.5h", 5400),
    ("300ms", 0.3), ("2h45m30.5s", 9930.5), ("-1h", -3600), ("+5m", 300),
    ("1us", 1e-6), ("1\u00b5s", 1e-6), ("0s", 0), (".5h", 1800),
])
def test_go_durations_count_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "1", "0", "1d", "1 h", "1H", "1h-2m", "--1h",
                                  "1h ", "ten minutes"])
def test_not_a_go_duration(text):
    assert parse_duration(text) is None


def test_a_duration_counts_back_from_now():
    assert until("24h") == NOW - datetime.timedelta(days=1)
    assert until("1h30m") == NOW - datetime.timedelta(minutes=90)
    assert until("-1h") == NOW + datetime.timedelta(hours=1)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-28T10:00:00Z", datetime.datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28T10:00:00.5Z", datetime.datetime(2026, 11, 28, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-28T10:00:00.123456789Z",
     datetime.datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-28T11:00:00+01:00", datetime.datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28T05:00:00-05:00", datetime.datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28T10Z", datetime.datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28T10:30z", datetime.datetime(2026, 11, 28, 10, 30, tzinfo=UTC)),
    ("2026-11-28Z", datetime.datetime(2026, 11, 28, tzinfo=UTC)),
    ("2026-11-28+02:00", datetime.datetime(2026, 11, 27, 22, tzinfo=UTC)),
    ("1764324000", datetime.datetime(2025, 11, 28, 10, 0, tzinfo=UTC)),
    ("1764324000.25", datetime.datetime(2025, 11, 28, 10, 0, 0, 250000, tzinfo=UTC)),
    ("0", datetime.datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_timestamps_in_docker_forms(text, expected):
    assert parse_timestamp(text) == expected
    assert until(text) == expected


def test_a_timestamp_without_a_zone_is_local_time():
    local = parse_timestamp("2026-11-28T10:00:00")
    assert local == datetime.datetime(2026, 11, 28, 10).astimezone()
    assert parse_timestamp("2026-11-28") == datetime.datetime(2026, 11, 28).astimezone()


def test_an_integer_is_unix_seconds():
    assert until(1764324000) == datetime.datetime(2025, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", [
    "yesterday", "2026-13-01", "2026-02-30", "2026-11-28T25:00:00Z", "2026-11-28T10:00:00+25:00",
    "2026/11/28", "26-11-28", "-5", "1e9", "", "2026-11-28 10:00:00", "1h ", True, None,
    {"h": 1}, "99999999h",
])
def test_a_bad_until_is_refused_naming_the_field(value):
    with pytest.raises(ValidationError) as err:
        until(value)
    assert err.value.field == "networks_filters.until"
    assert str(err.value).startswith("networks_filters.until: ")


@pytest.mark.parametrize("text, expected", [
    ("env", ("env", None)), ("env=test", ("env", "test")), ("env=", ("env", "")),
    ("a=b=c", ("a", "b=c")), ("com.example.tier=web", ("com.example.tier", "web")),
])
def test_label_forms(text, expected):
    assert parse_label(text, "f") == expected


@pytest.mark.parametrize("value", ["", "=test", 3, None, ["env"], "env\n"])
def test_bad_labels_are_refused(value):
    with pytest.raises(ValidationError) as err:
        parse_label(value, "networks_filters.label")
    assert err.value.field == "networks_filters.label"


def test_label_entries_must_all_match():
    f = parse_filters({"label": ["env=test", "team"]}, FIELD, NOW)
    assert f.matches({"env": "test", "team": "a"}, "")
    assert not f.matches({"env": "test"}, "")
    assert not f.matches({"env": "prod", "team": "a"}, "")
    assert not f.matches({}, "")
    assert parse_filters({"label": "env"}, FIELD).matches({"env": ""}, "")
    assert not parse_filters({"label": "env="}, FIELD).matches({"env": "x"}, "")
    assert parse_filters({"label": "env="}, FIELD).matches({"env": ""}, "")


def test_label_not_keeps_objects_carrying_the_label():
    f = parse_filters({"label!": "keep"}, FIELD, NOW)
    assert not f.matches({"keep": "yes"}, "")
    assert f.matches({"other": "x"}, "")
    assert f.matches({}, "")
    g = parse_filters({"label!": "env=prod"}, FIELD, NOW)
    assert not g.matches({"env": "prod"}, "")
    assert g.matches({"env": "test"}, "")


def test_label_not_with_a_list_keeps_only_objects_matching_all_of_it():
    """Docker's daemon: ``label!`` is MatchKVList, so a list excludes an object only
    when every entry matches."""
    f = parse_filters({"label!": ["a", "b=1"]}, FIELD, NOW)
    assert not f.matches({"a": "x", "b": "1"}, "")
    assert f.matches({"a": "x"}, "")
    assert f.matches({"b": "1"}, "")


def test_until_matches_objects_created_at_or_before_it():
    f = parse_filters({"until": "1h"}, FIELD, NOW)
    assert f.matches({}, "2026-11-28T10:00:00.000000Z")
    assert f.matches({}, "2026-11-28T11:00:00.000000Z")  # exactly at the limit
    assert not f.matches({}, "2026-11-28T11:59:00.000000Z")
    assert not f.matches({}, "")  # unknown creation time: never pruned by age
    assert not f.matches({}, "garbage")


def test_filters_combine_with_and():
    f = parse_filters({"label": "env=test", "label!": "keep", "until": "1h"}, FIELD, NOW)
    old = "2026-11-27T00:00:00Z"
    assert f.matches({"env": "test"}, old)
    assert not f.matches({"env": "test", "keep": ""}, old)
    assert not f.matches({"env": "prod"}, old)
    assert not f.matches({"env": "test"}, NOW.isoformat())


def test_no_filters_match_everything():
    for filters in (None, {}):
        f = parse_filters(filters, FIELD, NOW)
        assert f.matches({}, "") and f.matches({"a": "b"}, "2026-01-01T00:00:00Z")
    assert PruneFilter().describe() == []


def test_describe_prints_docker_forms():
    f = parse_filters({"label": ["env=test", "team"], "label!": "keep", "until": "2h"},
                      FIELD, NOW)
    assert f.describe() == ["label=env=test", "label=team", "label!=keep",
                            "until=2026-11-28T10:00:00+00:00"]


@pytest.mark.parametrize("filters, field", [
    ({"name": "x"}, "networks_filters.name"),
    ({"dangling": True}, "networks_filters.dangling"),
    ({"until": ["1h", "2h"]}, "networks_filters.until"),
    ({"until": []}, "networks_filters.until"),
    ({"label": []}, "networks_filters.label"),
    ({"label": ["env", 5]}, "networks_filters.label[1]"),
    ({"label!": {"env": "prod"}}, "networks_filters.label!"),
    ("label=env", "networks_filters"),
])
def test_unknown_keys_and_bad_values_name_the_field(filters, field):
    with pytest.raises(ValidationError) as err:
        parse_filters(filters, FIELD, NOW)
    assert err.value.field == field


def test_a_one_element_until_list_is_one_value():
    assert parse_filters({"until": ["1h"]}, FIELD, NOW).until == NOW - datetime.timedelta(
        hours=1)


def test_stored_creation_times_read_back():
    assert parse_created("2026-11-28T04:32:08.965119Z") == datetime.datetime(
        2026, 11, 28, 4, 32, 8, 965119, tzinfo=UTC)
    assert parse_created("1970-01-01T00:00:00Z") == datetime.datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_created("") is None and parse_created(None) is None
    assert parse_created("1764324000") is None


def test_prune_spec_parses_only_the_kinds_asked_for():
    spec = prune_spec({"networks": True, "networks_filters": {"label": "env=test"}})
    assert list(spec) == ["networks"]
    assert spec["networks"].labels == [("env", "test")]
    assert prune_spec({}) == {}
    both = prune_spec({"networks": True, "sandboxes": True})
    assert sorted(both) == ["networks", "sandboxes"]


def test_prune_spec_refuses_filters_for_a_kind_not_pruned():
    with pytest.raises(ValidationError) as err:
        prune_spec({"sandboxes_filters": {"until": "1h"}})
    assert err.value.field == "sandboxes_filters"


def test_prune_spec_checks_filters_of_both_kinds_first():
    with pytest.raises(ValidationError) as err:
        prune_spec({"networks": True, "sandboxes": True,
                    "sandboxes_filters": {"until": "soon"}})
    assert err.value.field == "sandboxes_filters.until"

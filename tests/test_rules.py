"""RULES.md §1-2, rule by rule. Each table names the rule it proves."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from builders import NUMBER, T0, call_payload, user

from aircall_sync import rules
from aircall_sync.aircall.models import Call
from aircall_sync.rules import Flow, Kind

DEFAULT_FLOW = {
    "outbound_answered": "completed",
    "outbound_unanswered": "completed",
    "inbound_answered": "completed",
    "missed": "open",
    "voicemail": "open",
}
WEEK = ("mon", "tue", "wed", "thu", "fri")
UTCZ = ZoneInfo("UTC")


def call(**overrides) -> Call:
    return Call.parse(call_payload(**overrides))


# R-CALL-1: answered <=> answered_at is not null
@pytest.mark.parametrize(
    "answered_at, expected",
    [(T0 + 5, True), (None, False), (0, True)],
)
def test_R_CALL_1_answered(answered_at, expected):
    assert rules.is_answered(call(answered_at=answered_at)) is expected


# R-CALL-2: exactly one kind per call
@pytest.mark.parametrize(
    "overrides, kind",
    [
        ({"direction": "outbound", "answered_at": T0 + 3}, Kind.OUTBOUND_ANSWERED),
        ({"direction": "outbound", "answered_at": None}, Kind.OUTBOUND_UNANSWERED),
        # An outbound call with a voicemail-looking asset is still outbound unanswered.
        ({"direction": "outbound", "answered_at": None, "asset": "https://assets.aircall.io/voicemail/1"},
         Kind.OUTBOUND_UNANSWERED),
        ({"direction": "inbound", "answered_at": T0 + 3}, Kind.INBOUND_ANSWERED),
        ({"direction": "inbound", "answered_at": None, "missed_call_reason": "no_available_agent"}, Kind.MISSED),
        ({"direction": "inbound", "answered_at": None, "voicemail": "https://v/1.mp3"}, Kind.VOICEMAIL),
        ({"direction": "inbound", "answered_at": None, "voicemail_short_url": "https://short/1"}, Kind.VOICEMAIL),
        ({"direction": "inbound", "answered_at": None, "asset": "https://assets.aircall.io/voicemail/9"},
         Kind.VOICEMAIL),
        ({"direction": "inbound", "answered_at": None, "asset": "https://assets.aircall.io/calls/9/recording"},
         Kind.MISSED),
        # A voicemail link on an answered inbound call does not make it a voicemail.
        ({"direction": "inbound", "answered_at": T0 + 3, "voicemail": "https://v/1.mp3"}, Kind.INBOUND_ANSWERED),
    ],
)
def test_R_CALL_2_kind(overrides, kind):
    assert rules.call_kind(call(**overrides)) is kind


# R-CALL-3: conference <=> more than two parties (REST or webhook key)
@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, False),
        ({"conference_participants": [{"type": "user", "id": 1}, {"type": "external", "phone_number": "+1"}]}, False),
        ({"conference_participants": [{"type": "user", "id": 1}, {"type": "user", "id": 2},
                                      {"type": "external", "phone_number": "+1"}]}, True),
        ({"participants": [{"type": "user"}, {"type": "user"}, {"type": "contact"}]}, True),
    ],
)
def test_R_CALL_3_conference(overrides, expected):
    assert rules.is_conference(call(**overrides)) is expected


# R-CALL-4: the external number in E.164, or none
@pytest.mark.parametrize(
    "raw, country, e164, valid, country_name",
    [
        ("+1 617-610-5413", "US", "+16176105413", True, "United States"),
        ("(617) 610-5413", "US", "+16176105413", True, "United States"),  # region hint from the line
        ("01 76 11 11 11", "FR", "+33176111111", True, "France"),
        ("+33 1 76 11 11 11", "US", "+33176111111", True, "France"),
        ("+49 30 901820", "FR", "+4930901820", True, "Germany"),
        ("anonymous", "US", None, None, None),
        ("Anonymous", "US", None, None, None),
        ("", "US", None, None, None),
        (None, "US", None, None, None),
        ("not a number", "US", None, None, None),
        ("+1 2", "US", None, None, None),  # parses, not possible
        ("+1 800-123-4567", "US", "+18001234567", False, ""),  # possible but invalid: still external
        ("+1 (555) 0100; DROP", "US", None, None, None),
    ],
)
def test_R_CALL_4_external_number(raw, country, e164, valid, country_name):
    number = dict(NUMBER, country=country)
    found = rules.external_number(call(raw_digits=raw, number=number))
    if e164 is None:
        assert found is None
    else:
        assert (found.e164, found.valid, found.country) == (e164, valid, country_name)


# R-CALL-5: only finished calls that ended at least sync.lag ago
NOW = datetime.fromtimestamp(T0 + 100, UTC) + timedelta(hours=1)


@pytest.mark.parametrize(
    "overrides, lag, ok",
    [
        ({}, timedelta(minutes=30), True),
        ({"status": "answered", "ended_at": None}, timedelta(minutes=30), False),
        ({"status": "initial"}, timedelta(minutes=30), False),
        ({"status": "done", "ended_at": None}, timedelta(minutes=30), False),
        ({}, timedelta(minutes=61), False),  # ended 60 minutes before NOW
        ({}, timedelta(minutes=60), True),
    ],
)
def test_R_CALL_5_settled(overrides, lag, ok):
    settled, reason = rules.settled(call(**overrides), NOW, lag)
    assert settled is ok
    assert (reason is None) is ok


# R-CALL-6: talk and waiting time
@pytest.mark.parametrize(
    "overrides, talk, wait",
    [
        ({"direction": "inbound", "answered_at": T0 + 12, "ended_at": T0 + 100}, 88, 12),
        ({"direction": "inbound", "answered_at": None, "ended_at": T0 + 40}, 0, 40),
        ({"direction": "outbound", "answered_at": T0 + 9, "ended_at": T0 + 70}, 61, 0),
        ({"direction": "outbound", "answered_at": None, "ended_at": T0 + 30}, 0, 0),
        ({"direction": "inbound", "answered_at": T0 + 5, "ended_at": None, "status": "answered"}, 0, 5),
        ({"direction": "inbound", "answered_at": T0 - 5, "ended_at": T0 + 10}, 15, 0),  # skewed clocks: never negative
    ],
)
def test_R_CALL_6_talk_and_wait(overrides, talk, wait):
    c = call(**overrides)
    assert (rules.talk_seconds(c), rules.wait_seconds(c)) == (talk, wait)


def test_R_CALL_6_talk_time_is_not_duration():
    c = call(direction="inbound", answered_at=T0 + 30, ended_at=T0 + 50, duration=50)
    assert rules.talk_seconds(c) == 20


# R-CALL-7: the Aircall id (int64) is the identity
def test_R_CALL_7_identity_is_the_int64_id():
    c = call(id=9_007_199_254_740_993)  # beyond float precision: must stay exact
    assert c.id == 9_007_199_254_740_993 and isinstance(c.id, int)


# R-CALL-8: media link: asset by default, short URL when asked, never the 1-hour mp3
@pytest.mark.parametrize(
    "overrides, mode, expected",
    [
        ({"asset": "https://assets/calls/1/recording", "recording": "https://mp3",
          "recording_short_url": "https://short/r"}, "asset", ("recording", "https://assets/calls/1/recording")),
        ({"asset": "https://assets/calls/1/recording", "recording": "https://mp3",
          "recording_short_url": "https://short/r"}, "short_url", ("recording", "https://short/r")),
        ({"asset": None, "recording": "https://mp3", "recording_short_url": "https://short/r"}, "asset",
         ("recording", "https://short/r")),
        ({"asset": None, "recording": "https://mp3"}, "asset", None),
        ({"direction": "inbound", "answered_at": None, "voicemail": "https://vm.mp3",
          "asset": "https://assets/voicemail/1", "voicemail_short_url": "https://short/v"}, "asset",
         ("voicemail", "https://assets/voicemail/1")),
        ({"direction": "inbound", "answered_at": None, "voicemail": "https://vm.mp3",
          "asset": "https://assets/voicemail/1", "voicemail_short_url": "https://short/v"}, "short_url",
         ("voicemail", "https://short/v")),
        ({}, "asset", None),
    ],
)
def test_R_CALL_8_media_link(overrides, mode, expected):
    media = rules.media_link(call(**overrides), mode)
    assert ((media.kind, media.link) if media else None) == expected


# R-CALL-9: the agent who answered
@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"user": user(1, "Ann")}, "Ann"),
        ({"user": user(1, "Ann"), "transferred_to": user(2, "Ben")}, "Ben"),
        ({"user": user(1, "Ann"), "transferred_to": user(2, "Ben"), "answered_at": None}, None),
        ({"direction": "outbound", "user": user(1, "Ann"), "answered_at": None}, None),
        ({"user": None}, None),
    ],
)
def test_R_CALL_9_answered_by(overrides, expected):
    agent = rules.answered_by(call(**overrides))
    assert (agent.name if agent else None) == expected


# R-FLOW-1: per kind, completed | open | skip, defaults completed/completed/completed/open/open
@pytest.mark.parametrize(
    "overrides, flow_overrides, expected",
    [
        ({"direction": "outbound"}, {}, Flow.COMPLETED),
        ({"direction": "outbound", "answered_at": None}, {}, Flow.COMPLETED),
        ({}, {}, Flow.COMPLETED),
        ({"answered_at": None}, {}, Flow.OPEN),
        ({"answered_at": None, "voicemail": "https://v"}, {}, Flow.OPEN),
        ({"answered_at": None}, {"missed": "skip"}, Flow.SKIP),
        ({"answered_at": None, "voicemail": "https://v"}, {"voicemail": "completed"}, Flow.COMPLETED),
    ],
)
def test_R_FLOW_1_call_flow(overrides, flow_overrides, expected):
    decision = rules.decide(
        call(**overrides), {**DEFAULT_FLOW, **flow_overrides},
        log_calls="always", days=WEEK, start=time(9), end=time(18), default_zone=UTCZ,
    )
    assert decision.flow is expected
    assert decision.reason == ("call flow" if expected is Flow.SKIP else None)


# R-FLOW-2: business hours in the Aircall number's time zone
MON_0830_UTC = int(datetime(2026, 9, 28, 8, 30, tzinfo=UTC).timestamp())  # Monday


@pytest.mark.parametrize(
    "started_at, zone, reason, log_calls, skipped",
    [
        (MON_0830_UTC, "Europe/Paris", None, "business_hours", False),  # 10:30 in Paris
        (MON_0830_UTC, "America/New_York", None, "business_hours", True),  # 04:30 in New York
        (MON_0830_UTC, "America/New_York", None, "always", False),
        (MON_0830_UTC + 9 * 3600 + 1800, "Europe/Paris", None, "business_hours", True),  # 20:00 Paris
        (MON_0830_UTC + 7 * 3600 + 1800, "Europe/Paris", None, "business_hours", True),  # 18:00 Paris: end is exclusive
        (MON_0830_UTC - 2 * 86400, "Europe/Paris", None, "business_hours", True),  # Saturday
        (MON_0830_UTC, "Europe/Paris", "out_of_opening_hours", "business_hours", True),
        (MON_0830_UTC, "Not/AZone", None, "business_hours", True),  # unknown zone => sync.timezone (UTC 08:30)
        (MON_0830_UTC, "Australia/Sydney", None, "business_hours", True),  # 18:30 Monday in Sydney
    ],
)
def test_R_FLOW_2_business_hours(started_at, zone, reason, log_calls, skipped):
    c = call(started_at=started_at, answered_at=started_at + 5, ended_at=started_at + 60,
             missed_call_reason=reason, number=dict(NUMBER, time_zone=zone))
    decision = rules.decide(c, DEFAULT_FLOW, log_calls=log_calls, days=WEEK, start=time(9), end=time(18),
                            default_zone=UTCZ)
    assert decision.skipped is skipped
    if skipped:
        assert decision.reason.startswith("outside business hours")


def test_R_FLOW_2_reason_names_local_time_and_zone():
    c = call(started_at=MON_0830_UTC, number=dict(NUMBER, time_zone="America/New_York"))
    decision = rules.decide(c, DEFAULT_FLOW, log_calls="business_hours", days=WEEK, start=time(9), end=time(18),
                            default_zone=UTCZ)
    assert decision.reason == "outside business hours (mon 04:30 America/New_York)"


def test_R_FRONT_1_no_external_number_is_a_skip_when_the_target_needs_one():
    c = call(raw_digits="anonymous")
    kwargs = dict(log_calls="always", days=WEEK, start=time(9), end=time(18), default_zone=UTCZ)
    assert rules.decide(c, DEFAULT_FLOW, **kwargs).skipped is False
    decision = rules.decide(c, DEFAULT_FLOW, needs_external_number=True, **kwargs)
    assert decision.skipped and decision.reason == "no external number"


def test_R_SF_FIELDS_country_names_are_the_geocoders():
    """R-SF-FIELDS country: exactly what geocoder.country_name_for_number(n, "en") gives, for every region."""
    import phonenumbers
    from phonenumbers import geocoder

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            assert rules.country_name(example) == geocoder.country_name_for_number(example, "en"), region
            checked += 1
    assert checked > 300
    assert rules._locale_names() is not None  # the light path is the one in use

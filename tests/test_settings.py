"""Tests of the settings module (DESIGN §4; defaults from RULES.md).

Table-driven; no network, no real credentials. ``parse_settings`` is exercised
on plain dicts, ``load_settings`` on files in ``tmp_path``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import os
import pickle
import re
import stat
import string
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from aircall_sync.errors import SettingsError, UsageError
from aircall_sync.settings import (
    CALL_KINDS,
    FRONT_QUALIFICATIONS,
    LOCALES,
    SUBJECT_KEYS,
    SUBJECT_TEMPLATES,
    Secret,
    Settings,
    SettingsFileExistsError,
    default_config_path,
    default_settings_text,
    load_settings,
    parse_settings,
    toml_fields,
    toml_key_paths,
    write_example,
)

REPO = Path(__file__).resolve().parents[1]
PACKAGED_EXAMPLE = REPO / "aircall_sync" / "settings.example.toml"
ROOT_EXAMPLE = REPO / "settings.example.toml"

AIRCALL = {"api_id": "123456", "api_token": "aircall-token-value"}
ENV = {"AIRCALL_API_ID": "123456", "AIRCALL_API_TOKEN": "aircall-token-value"}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def data(**sections: Any) -> dict[str, Any]:
    """A settings document: the required Aircall keys plus ``sections``."""
    return merge({"aircall": dict(AIRCALL)}, sections)


def nested(path: str, value: Any) -> dict[str, Any]:
    """``nested("a.b.c", 1)`` → ``{"a": {"b": {"c": 1}}}``."""
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def problems_of(doc: dict[str, Any], environ: dict[str, str] | None = None, **kw: Any) -> list[str]:
    with pytest.raises(SettingsError) as info:
        parse_settings(doc, environ=environ if environ is not None else {}, **kw)
    return info.value.problems


def attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# --- defaults (DESIGN §4, RULES) -------------------------------------------------------

DEFAULTS = [
    ("aircall.base_url", "https://api.aircall.io/v1"),
    ("aircall.requests_per_minute", 60),
    # RULES §8 (R-AI-1)
    ("aircall.ai.enabled", False),
    ("aircall.ai.min_talk_seconds", 30),
    ("aircall.ai.settle", dt.timedelta(hours=2)),
    # RULES §9 (R-CONTACT-1)
    ("aircall.contacts.save_matched", False),
    ("aircall.contacts.save_created", False),
    ("sync.timezone", "UTC"),
    ("sync.tzinfo", ZoneInfo("UTC")),
    ("sync.lag", dt.timedelta(minutes=30)),  # R-CALL-5
    ("sync.revisit", dt.timedelta(hours=24)),
    ("sync.state_path", Path("aircall-sync.sqlite3")),
    ("sync.log_calls", "always"),  # R-FLOW-2
    ("sync.business_hours.days", ("mon", "tue", "wed", "thu", "fri")),
    ("sync.business_hours.start", dt.time(9, 0)),
    ("sync.business_hours.end", dt.time(18, 0)),
    ("salesforce.enabled", False),
    ("salesforce.mode", "task"),
    ("salesforce.instance_url", ""),
    ("salesforce.api_version", "63.0"),
    ("salesforce.auth", "token"),
    ("salesforce.batch_size", 200),
    ("salesforce.bulk_threshold", 2000),
    ("salesforce.ca_bundle", None),
    ("salesforce.private_key_file", None),
    # R-FLOW-1
    ("salesforce.call_flow.outbound_answered", "completed"),
    ("salesforce.call_flow.outbound_unanswered", "completed"),
    ("salesforce.call_flow.inbound_answered", "completed"),
    ("salesforce.call_flow.missed", "open"),
    ("salesforce.call_flow.voicemail", "open"),
    # R-SF-MATCH-4/6, R-SF-OWNER
    ("salesforce.matching.unknown_number", "lead"),
    ("salesforce.matching.link_to", "none"),
    ("salesforce.matching.create_case", False),
    ("salesforce.matching.fallback_owner_id", ""),
    ("salesforce.matching.new_lead_company", "Unknown company"),
    ("salesforce.matching.reassign_integration_owned", True),
    # R-SF-TASK-3, R-SF-SUBJ, R-SF-TASK-5
    ("salesforce.task.status_completed", "Completed"),
    ("salesforce.task.status_open", "In Progress"),
    ("salesforce.task.subject_locale", "en"),
    ("salesforce.task.record_type_id", ""),
    ("salesforce.task.subjects.outbound_answered", "Outbound answered call to {record_name} with {number_name}"),
    ("salesforce.task.subjects.outbound_unanswered", "Outbound unanswered call to {record_name} with {number_name}"),
    ("salesforce.task.subjects.inbound_answered", "Inbound call from {record_name} on {number_name}"),
    ("salesforce.task.subjects.missed", "Missed call from {record_name} on {number_name}"),
    ("salesforce.task.subjects.voicemail", "Voicemail from {record_name} on {number_name}"),
    ("salesforce.task.subjects.outbound_conference", "Outbound conference call to {record_name} with {number_name}"),
    ("salesforce.task.subjects.inbound_conference", "Inbound call from {record_name} on {number_name}"),
    # R-SF-FIELDS
    ("salesforce.task.fields.waiting_time", "aircall__Waiting_Time__c"),
    ("salesforce.task.fields.answered_by", "aircall__Answered_by__c"),
    ("salesforce.task.fields.phone_number", "aircall__Phone_number__c"),
    ("salesforce.task.fields.country", "aircall__Country__c"),
    ("salesforce.task.fields.call_recording", "aircall__Call_Recording__c"),
    ("salesforce.task.fields.transferred_to", "aircall__Transferred_to__c"),
    ("salesforce.task.fields.timezone", "aircall__Timezone__c"),
    ("salesforce.task.fields.hour_of_day", "aircall__Hour_of_the_day__c"),
    ("salesforce.task.fields.connection_status", "aircall__Connection_status__c"),
    ("salesforce.task.fields.has_connected", "aircall__Has_connected__c"),
    # R-AI-4: optional Task fields, off by default
    ("salesforce.task.fields.ai_summary", ""),
    ("salesforce.task.fields.ai_topics", ""),
    ("salesforce.task.fields.ai_sentiment", ""),
    ("salesforce.task.fields.ai_action_items", ""),
    ("salesforce.task.fields.ai_transcription", ""),
    # R-CALL-8
    ("salesforce.recording.store", True),
    ("salesforce.recording.where", "field"),
    ("salesforce.recording.link", "asset"),
    ("salesforce.voicemail.store", True),
    ("salesforce.voicemail.where", "field"),
    ("salesforce.voicemail.link", "asset"),
    # R-SFV-1, R-SFV-3
    ("salesforce.voice.call_center_id", ""),
    ("salesforce.voice.aircall_voice_object", "aircall__Aircall_Voice__c"),
    ("salesforce.voice.voice_call_link_field", "aircall__Aircall_Voice__c"),
    ("salesforce.voice.fields.call_id", "aircall__Call_Id__c"),
    ("salesforce.voice.fields.call_type", "aircall__Call_Type__c"),
    ("salesforce.voice.fields.detailed_type", "aircall__Detailed_Type__c"),
    ("salesforce.voice.fields.started_at", "aircall__Started_At__c"),
    ("salesforce.voice.fields.answered_at", "aircall__Answered_At__c"),
    ("salesforce.voice.fields.ended_at", "aircall__Ended_At__c"),
    ("salesforce.voice.fields.duration", "aircall__Duration__c"),
    ("salesforce.voice.fields.aircall_number", "aircall__Aircall_Number__c"),
    ("salesforce.voice.fields.contact", "aircall__Contact__c"),
    ("salesforce.voice.fields.lead", "aircall__Lead__c"),
    ("salesforce.voice.fields.account", "aircall__Account__c"),
    ("salesforce.voice.fields.media_link", "aircall__Recording__c"),
    ("salesforce.voice.fields.tags", "aircall__Tags__c"),
    ("salesforce.voice.fields.comments", "aircall__Comments__c"),
    ("salesforce.voice.fields.assigned_to", "aircall__Assigned_To__c"),
    ("salesforce.voice.fields.answered_by", "aircall__Answered_By__c"),
    # R-AI-4
    ("salesforce.voice.fields.ai_summary", "aircall__AI_Summary__c"),
    ("salesforce.voice.fields.ai_topics", "aircall__AI_Topics__c"),
    ("salesforce.voice.fields.ai_sentiment", "aircall__AI_Sentiment__c"),
    ("salesforce.voice.fields.ai_action_items", "aircall__AI_Action_Items__c"),
    ("salesforce.voice.fields.ai_transcription", "aircall__AI_Transcription__c"),
    # Front, R-FRONT-2/3/4
    ("front.enabled", False),
    ("front.base_url", "https://api2.frontapp.com"),
    ("front.inbox", "Aircall Phone"),
    ("front.requests_per_minute", 50),
    ("front.activities", "separate"),
    ("front.subject_locale", "en"),
    ("front.call_flow.outbound_answered", "completed"),
    ("front.call_flow.outbound_unanswered", "completed"),
    ("front.call_flow.inbound_answered", "completed"),
    ("front.call_flow.missed", "open"),
    ("front.call_flow.voicemail", "open"),
    ("front.subjects.outbound_answered", "Outbound call"),
    ("front.subjects.outbound_unanswered", "Outbound unanswered call"),
    ("front.subjects.inbound_answered", "Inbound call"),
    ("front.subjects.missed", "Missed call"),
    ("front.subjects.voicemail", "Voicemail"),
    # messages, RULES §7 (R-MSG-3, R-MSG-4)
    ("sync.log_messages", "always"),
    ("salesforce.messages.log", "all"),
    ("salesforce.messages.task_type", ""),
    ("salesforce.messages.subjects.outbound", "{channel} sent from {user_name} via {number_name} to {record_name}"),
    ("salesforce.messages.subjects.inbound", "{channel} received from {record_name} to {number_name}"),
    ("front.messages.log", "all"),
    # live mode (DESIGN §10)
    ("live.host", "127.0.0.1"),
    ("live.port", 8080),
    ("live.path", "/aircall/webhook"),
    ("live.public_url", ""),
    ("live.tls_cert_file", None),
    ("live.tls_key_file", None),
    ("live.reconcile_every", dt.timedelta(minutes=30)),
    ("live.reconcile_window", dt.timedelta(hours=2)),
    ("live.batch_window", dt.timedelta(seconds=1)),
    ("live.keep_events", dt.timedelta(days=30)),
    ("live.max_body_bytes", 1_048_576),
]


@pytest.mark.parametrize(("path", "expected"), DEFAULTS)
def test_defaults(path: str, expected: Any) -> None:
    settings = parse_settings(data(), environ={})
    assert attr(settings, path) == expected


def test_defaults_cover_every_scalar_key() -> None:
    listed = {p for p, _ in DEFAULTS}
    secrets = {"aircall.api_token", "salesforce.access_token", "salesforce.consumer_secret",
               "salesforce.password", "salesforce.security_token", "front.api_token", "live.webhook_token"}
    required_or_empty = {"aircall.api_id", "salesforce.username", "salesforce.consumer_key"}
    sections = {p for p in toml_key_paths() if isinstance(attr(Settings(), p), _dataclass_types())}
    missing = set(toml_key_paths()) - listed - secrets - required_or_empty - sections
    assert missing == set()


def _dataclass_types() -> tuple[type, ...]:
    found: list[type] = []

    def walk(cls: type) -> None:
        for f in toml_fields(cls):
            if "section" in f.metadata:
                found.append(f.metadata["section"])
                walk(f.metadata["section"])

    walk(Settings)
    return tuple(found)


def test_defaults_with_no_tables_at_all_except_aircall() -> None:
    settings = parse_settings(data(), environ={})
    assert settings == parse_settings(data(sync={}, salesforce={}, front={}), environ={})
    assert settings.aircall.api_id == "123456"
    assert settings.aircall.api_token.reveal() == "aircall-token-value"
    assert settings.path is None
    assert settings.enabled_targets() == []


# --- enums -----------------------------------------------------------------------------

ENUMS = [
    ("sync.log_calls", ["always", "business_hours"]),
    ("salesforce.mode", ["task", "voice"]),
    ("salesforce.auth", ["token", "jwt", "client_credentials", "password"]),
    *[(f"salesforce.call_flow.{k}", ["completed", "open", "skip"]) for k in CALL_KINDS],
    *[(f"front.call_flow.{k}", ["completed", "open", "skip"]) for k in CALL_KINDS],
    ("salesforce.matching.unknown_number", ["lead", "contact", "account", "nothing"]),
    ("salesforce.matching.link_to", ["none", "case", "opportunity"]),
    ("salesforce.task.subject_locale", ["en", "fr", "de", "es"]),
    ("salesforce.recording.where", ["field", "description", "both"]),
    ("salesforce.recording.link", ["asset", "short_url"]),
    ("salesforce.voicemail.where", ["field", "description", "both"]),
    ("salesforce.voicemail.link", ["asset", "short_url"]),
    ("front.activities", ["separate", "combined"]),
    ("front.subject_locale", ["en", "fr", "de", "es"]),
]


@pytest.mark.parametrize(("path", "choices"), ENUMS)
def test_enum_accepts_each_choice(path: str, choices: list[str]) -> None:
    for choice in choices:
        settings = parse_settings(data(**nested(path, choice)), environ={})
        assert attr(settings, path) == choice


@pytest.mark.parametrize(("path", "choices"), ENUMS)
@pytest.mark.parametrize(
    ("bad", "shown"), [("opn", '"opn"'), ("", '""'), ("COMPLETED", '"COMPLETED"'), (1, "1"), (True, "true")]
)
def test_enum_rejects_other_values(path: str, choices: list[str], bad: Any, shown: str) -> None:
    assert problems_of(data(**nested(path, bad))) == [
        f"{path}: expected one of {', '.join(choices)}, got {shown}"
    ]


def test_enum_message_matches_the_contract_example() -> None:
    assert problems_of(data(salesforce={"call_flow": {"missed": "opn"}})) == [
        'salesforce.call_flow.missed: expected one of completed, open, skip, got "opn"'
    ]


def test_call_flow_decisions_per_target_and_kind() -> None:  # R-FLOW-1
    settings = parse_settings(
        data(salesforce={"enabled": True, "instance_url": "https://x.my.salesforce.com",
                         "access_token": "t", "call_flow": {"missed": "skip"}},
             front={"enabled": True, "api_token": "f", "call_flow": {"voicemail": "completed"}}),
        environ={},
    )
    assert settings.enabled_targets() == ["salesforce", "front"]
    assert settings.salesforce.call_flow.for_kind("missed") == "skip"
    assert settings.decision("salesforce", "voicemail") == "open"
    assert settings.decision("front", "voicemail") == "completed"
    assert settings.decision("front", "missed") == "open"
    with pytest.raises(ValueError):
        settings.salesforce.call_flow.for_kind("conference")
    with pytest.raises(ValueError):
        settings.decision("hubspot", "missed")


@pytest.mark.parametrize(
    ("sf", "front", "expected"),
    [(False, False, []), (True, False, ["salesforce"]), (False, True, ["front"]),
     (True, True, ["salesforce", "front"])],
)
def test_enabled_targets_order(sf: bool, front: bool, expected: list[str]) -> None:
    settings = parse_settings(
        data(salesforce={"enabled": sf, "instance_url": "https://x.my.salesforce.com", "access_token": "t"},
             front={"enabled": front, "api_token": "f"}),
        environ={},
    )
    assert settings.enabled_targets() == expected


def test_task_status_for_decision() -> None:  # R-SF-TASK-3
    task = parse_settings(data(salesforce={"task": {"status_open": "Not Started"}}), environ={}).salesforce.task
    assert task.status_for("completed") == "Completed"
    assert task.status_for("open") == "Not Started"
    with pytest.raises(ValueError):
        task.status_for("skip")


# --- durations, times, time zones, numbers ---------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("24h", dt.timedelta(hours=24)),
        ("90s", dt.timedelta(seconds=90)),
        ("2d", dt.timedelta(days=2)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", dt.timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0s", dt.timedelta(0)),
        (" 45m ", dt.timedelta(minutes=45)),
    ],
)
@pytest.mark.parametrize("key", ["lag", "revisit"])
def test_durations(key: str, text: str, expected: dt.timedelta) -> None:
    assert getattr(parse_settings(data(sync={key: text}), environ={}).sync, key) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [("30", '"30"'), ("30 minutes", '"30 minutes"'), ("m", '"m"'), ("-5m", '"-5m"'), ("", '""'),
     ("1.5h", '"1.5h"'), ("30m1h", '"30m1h"'), (1800, "1800"), (True, "true")],
)
def test_bad_durations(value: Any, shown: str) -> None:
    assert problems_of(data(sync={"lag": value})) == [
        f'sync.lag: expected a duration like "90s", "30m", "24h", "2d" or "1h30m", got {shown}'
    ]


def test_huge_duration_is_a_problem_not_a_crash() -> None:
    assert problems_of(data(sync={"revisit": "99999999999d"})) == [
        'sync.revisit: expected a duration of less than a million days, got "99999999999d"'
    ]


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_timezone_kept_as_name_and_zoneinfo(name: str) -> None:
    sync = parse_settings(data(sync={"timezone": name}), environ={}).sync
    assert sync.timezone == name
    assert sync.tzinfo == ZoneInfo(name)


@pytest.mark.parametrize("name", ["Mars/Olympus", "Europe", "", "/etc/passwd", "../UTC", "Europe/Paris "])
def test_unknown_timezone_is_named(name: str) -> None:
    shown = '"' + name + '"'
    assert problems_of(data(sync={"timezone": name})) == [
        f'sync.timezone: unknown time zone {shown} (expected an IANA name like "Europe/Paris")'
    ]


def test_timezone_of_wrong_type() -> None:
    assert problems_of(data(sync={"timezone": 2})) == [
        'sync.timezone: expected an IANA time zone name like "Europe/Paris", got 2'
    ]


def test_business_hours_parsed() -> None:  # R-FLOW-2
    hours = parse_settings(
        data(sync={"log_calls": "business_hours",
                   "business_hours": {"days": ["sat", "sun"], "start": "08:30", "end": dt.time(12, 0)}}),
        environ={},
    ).sync.business_hours
    assert hours.days == ("sat", "sun")
    assert hours.weekdays == frozenset({5, 6})
    assert (hours.start, hours.end) == (dt.time(8, 30), dt.time(12, 0))
    assert hours.includes(dt.datetime(2024, 6, 1, 8, 30))  # a Saturday, at opening
    assert not hours.includes(dt.datetime(2024, 6, 1, 12, 0))  # closing minute is outside
    assert not hours.includes(dt.datetime(2024, 6, 3, 9, 0))  # a Monday


@pytest.mark.parametrize(
    ("business_hours", "expected"),
    [
        ({"days": ["mon", "fri", "mon"]}, ['sync.business_hours.days[2]: "mon" is listed twice']),
        ({"days": ["monday"]},
         ['sync.business_hours.days[0]: expected one of mon, tue, wed, thu, fri, sat, sun, got "monday"']),
        ({"days": []}, ["sync.business_hours.days: expected at least one day, got []"]),
        ({"days": "mon"},
         ['sync.business_hours.days: expected a list of days among mon, tue, wed, thu, fri, sat, sun, got "mon"']),
        ({"start": "9:00"}, ['sync.business_hours.start: expected a time "HH:MM" (24-hour clock), got "9:00"']),
        ({"end": "24:00"}, ['sync.business_hours.end: expected a time "HH:MM" (24-hour clock), got "24:00"']),
        ({"start": "18:00"}, ["sync.business_hours: start (18:00) must be earlier than end (18:00)"]),
        ({"start": "19:00", "end": "08:00"}, ["sync.business_hours: start (19:00) must be earlier than end (08:00)"]),
    ],
)
def test_business_hours_problems(business_hours: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(data(sync={"business_hours": business_hours})) == expected


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("aircall.requests_per_minute", 0, "expected a positive integer, got 0"),
        ("aircall.requests_per_minute", -1, "expected a positive integer, got -1"),
        ("aircall.requests_per_minute", "60", 'expected a positive integer, got "60"'),
        ("aircall.requests_per_minute", 60.0, "expected a positive integer, got 60.0"),
        ("front.requests_per_minute", True, "expected a positive integer, got true"),
        ("salesforce.batch_size", 201, "expected an integer from 1 to 200, got 201"),
        ("salesforce.batch_size", 0, "expected an integer from 1 to 200, got 0"),
        ("salesforce.bulk_threshold", 0, "expected a positive integer, got 0"),
        ("salesforce.api_version", "63", 'expected a Salesforce API version like "63.0", got "63"'),
        ("salesforce.api_version", 63.0, 'expected a Salesforce API version like "63.0", got 63.0'),
        ("salesforce.api_version", "v63.0", 'expected a Salesforce API version like "63.0", got "v63.0"'),
        ("salesforce.enabled", "yes", 'expected true or false, got "yes"'),
        ("salesforce.matching.create_case", 1, "expected true or false, got 1"),
        ("salesforce.recording.store", "true", 'expected true or false, got "true"'),
        ("aircall.base_url", "ftp://example.com",
         'expected an http:// or https:// URL such as "https://example.com", got "ftp://example.com"'),
        ("front.base_url", "api2.frontapp.com",
         'expected an http:// or https:// URL such as "https://example.com", got "api2.frontapp.com"'),
        ("salesforce.instance_url", "https://",
         'expected an http:// or https:// URL such as "https://example.com", got "https://"'),
        ("salesforce.instance_url", "https://x:99999",
         'expected an http:// or https:// URL such as "https://example.com", got "https://x:99999"'),
        ("salesforce.matching.fallback_owner_id", "00Q000000000001",
         'expected a Salesforce User id (15 or 18 characters, starting with 005) or "", got "00Q000000000001"'),
        ("salesforce.task.record_type_id", "0125",
         'expected a Salesforce RecordType id (15 or 18 characters, starting with 012) or "", got "0125"'),
        ("salesforce.voice.call_center_id", "04v-bad",
         'expected a Salesforce CallCenter id (15 or 18 characters) or "", got "04v-bad"'),
        ("salesforce.task.fields.country", "Country c",
         'expected a Salesforce API name like "aircall__Example__c" or "" to leave the field out, '
         'got "Country c"'),
        ("salesforce.voice.fields.call_id", "",
         'expected a Salesforce API name like "aircall__Example__c", got ""'),
        ("salesforce.voice.aircall_voice_object", "",
         'expected a Salesforce API name like "aircall__Example__c", got ""'),
        ("salesforce.task.status_completed", "", 'expected a non-empty string, got ""'),
        ("salesforce.matching.new_lead_company", " ", 'expected a non-empty string, got " "'),
        ("front.inbox", "", 'expected a non-empty string, got ""'),
        ("salesforce.username", "admin", 'expected a Salesforce username (it has the form of an e-mail '
                                         'address), got "admin"'),
        ("sync.state_path", "", 'expected a file path, got ""'),
        ("sync", "daily", 'expected a table, got "daily"'),
        ("salesforce.task", [{"a": 1}], "expected a table, got an array of tables"),
    ],
)
def test_value_problems(path: str, value: Any, expected: str) -> None:
    assert problems_of(data(**nested(path, value))) == [f"{path}: {expected}"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("salesforce.batch_size", 1),
        ("salesforce.batch_size", 200),
        ("salesforce.bulk_threshold", 1),
        ("salesforce.api_version", "64.0"),
        ("salesforce.matching.fallback_owner_id", "005000000000001"),
        ("salesforce.matching.fallback_owner_id", "005000000000001AAA"),
        ("salesforce.task.record_type_id", "012000000000001AAA"),
        ("salesforce.task.fields.country", ""),
        ("salesforce.task.fields.country", "My_Country__c"),
        ("salesforce.voice.fields.tags", ""),
    ],
)
def test_accepted_values(path: str, value: Any) -> None:
    assert attr(parse_settings(data(**nested(path, value)), environ={}), path) == value


def test_urls_lose_their_trailing_slash() -> None:
    settings = parse_settings(data(aircall={"base_url": "http://127.0.0.1:8123/v1/"}), environ={})
    assert settings.aircall.base_url == "http://127.0.0.1:8123/v1"


def test_enabled_field_helpers() -> None:
    fields = parse_settings(data(salesforce={"task": {"fields": {"country": "", "timezone": ""}}}),
                            environ={}).salesforce.task.fields
    assert "country" not in fields.enabled() and "timezone" not in fields.enabled()
    assert fields.enabled()["waiting_time"] == "aircall__Waiting_Time__c"


def test_R_AI_4_ai_fields_count_only_when_ai_is_on() -> None:
    """The ai_* keys are written (and checked) only with aircall.ai.enabled: callers ask with ai=."""
    settings = parse_settings(data(salesforce={"task": {"fields": {"ai_summary": "AI_Summary__c"}},
                                               "voice": {"fields": {"ai_topics": ""}}}), environ={})
    task, voice = settings.salesforce.task.fields, settings.salesforce.voice.fields
    assert "ai_summary" not in task.enabled()
    assert task.enabled(ai=True)["ai_summary"] == "AI_Summary__c"
    assert "ai_transcription" not in task.enabled(ai=True)  # "" by default
    assert not any(k.startswith("ai_") for k in voice.enabled())
    assert set(k for k in voice.enabled(ai=True) if k.startswith("ai_")) == {
        "ai_summary", "ai_sentiment", "ai_action_items", "ai_transcription"}


def test_ai_field_names_stay_out_of_the_sections_repr() -> None:
    """Fingerprints hash the settings' repr: the AI keys added nothing to it, so no call is re-planned after an
    upgrade while AI is off (the AI settings enter the fingerprint on their own when it is on)."""
    settings = parse_settings(data(salesforce={"task": {"fields": {"ai_summary": "AI_Summary__c"}}}), environ={})
    assert "ai_" not in repr(settings.salesforce.task) and "AI_Summary__c" not in repr(settings.salesforce.task)
    assert "ai_summary" not in repr(settings.salesforce.voice.fields)


@pytest.mark.parametrize(("value", "problem"), [
    ("31d", 'aircall.ai.settle: expected a duration of at most "30d" (Aircall produces its AI data minutes after a '
            'call), got "31d"'),
    ("soon", 'aircall.ai.settle: expected a duration like "90s", "30m", "24h", "2d" or "1h30m", got "soon"'),
])
def test_R_AI_1_settle_is_a_bounded_duration(value: str, problem: str) -> None:
    assert problems_of(data(aircall={"ai": {"settle": value}})) == [problem]


def test_R_AI_1_ai_settings_are_read() -> None:
    ai = parse_settings(data(aircall={"ai": {"enabled": True, "min_talk_seconds": 60, "settle": "30m"}}),
                        environ={}).aircall.ai
    assert (ai.enabled, ai.min_talk_seconds, ai.settle) == (True, 60, dt.timedelta(minutes=30))
    assert problems_of(data(aircall={"ai": {"min_talk_seconds": -1}})) == [
        "aircall.ai.min_talk_seconds: expected an integer from 0 to 86400, got -1"]
    assert problems_of(data(aircall={"ai": {"enable": True}})) == [
        'aircall.ai.enable: unknown key (did you mean "enabled"?)']


def test_R_CONTACT_1_contacts_settings_are_read() -> None:
    contacts = parse_settings(data(aircall={"contacts": {"save_matched": True, "save_created": True}}),
                              environ={}).aircall.contacts
    assert (contacts.save_matched, contacts.save_created) == (True, True)
    assert problems_of(data(aircall={"contacts": {"save_created": True}})) == [
        "aircall.contacts.save_created: true has no effect while aircall.contacts.save_matched is false: set "
        "save_matched = true too, or save_created = false"]
    assert problems_of(data(aircall={"contacts": {"save_matched": "yes"}})) == [
        'aircall.contacts.save_matched: expected true or false, got "yes"']
    assert problems_of(data(aircall={"contacts": {"save_match": True}})) == [
        'aircall.contacts.save_match: unknown key (did you mean "save_matched"?)']


# --- subjects (R-SF-SUBJ, R-FRONT-3) -------------------------------------------------------

@pytest.mark.parametrize("locale", LOCALES)
def test_translations_are_complete_and_use_only_known_placeholders(locale: str) -> None:
    assert set(SUBJECT_TEMPLATES[locale]) == set(SUBJECT_KEYS)
    assert set(FRONT_QUALIFICATIONS[locale]) == set(CALL_KINDS)
    for template in SUBJECT_TEMPLATES[locale].values():
        names = {n for _, n, _, _ in string.Formatter().parse(template) if n is not None}
        assert names == {"record_name", "number_name"}
        assert len(template) < 255
    for qualification in FRONT_QUALIFICATIONS[locale].values():
        assert qualification and "{" not in qualification


def test_translations_differ_from_english() -> None:
    for locale in ("fr", "de", "es"):
        assert SUBJECT_TEMPLATES[locale]["missed"] != SUBJECT_TEMPLATES["en"]["missed"]
        assert FRONT_QUALIFICATIONS[locale]["missed"] != FRONT_QUALIFICATIONS["en"]["missed"]


@pytest.mark.parametrize("locale", LOCALES)
def test_subject_locale_selects_default_subjects(locale: str) -> None:
    settings = parse_settings(
        data(salesforce={"task": {"subject_locale": locale}}, front={"subject_locale": locale}), environ={}
    )
    for key in SUBJECT_KEYS:
        assert getattr(settings.salesforce.task.subjects, key) == SUBJECT_TEMPLATES[locale][key]
    for kind in CALL_KINDS:
        assert settings.front.subjects.qualification(kind) == FRONT_QUALIFICATIONS[locale][kind]


def test_subject_overrides_win_over_the_locale() -> None:
    settings = parse_settings(
        data(salesforce={"task": {"subject_locale": "fr",
                                  "subjects": {"missed": "Rappeler {record_name} ({direction}, {user_name})"}}},
             front={"subject_locale": "es", "subjects": {"voicemail": "Buzón"}}),
        environ={},
    )
    subjects = settings.salesforce.task.subjects
    assert subjects.missed == "Rappeler {record_name} ({direction}, {user_name})"
    assert subjects.voicemail == SUBJECT_TEMPLATES["fr"]["voicemail"]
    assert settings.front.subjects.voicemail == "Buzón"
    assert settings.front.subjects.missed == "Llamada perdida"


@pytest.mark.parametrize(
    ("kind", "conference", "key"),
    [("outbound_answered", True, "outbound_conference"), ("inbound_answered", True, "inbound_conference"),
     ("outbound_answered", False, "outbound_answered"), ("missed", True, "missed")],
)
def test_subject_template_for_conferences(kind: str, conference: bool, key: str) -> None:  # R-CALL-3
    subjects = parse_settings(data(), environ={}).salesforce.task.subjects
    assert subjects.template(kind, conference=conference) == SUBJECT_TEMPLATES["en"][key]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("outbound_answered", "Outbound call - Support FR"), ("missed", "Missed call - Support FR"),
     ("voicemail", "Voicemail")],
)
def test_front_subject(kind: str, expected: str) -> None:  # R-FRONT-3
    assert parse_settings(data(), environ={}).front.subjects.subject(kind, "Support FR") == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Call {foo}", "unknown placeholder {foo}; available: {record_name}, {number_name}, {user_name}, "
                       "{direction}"),
        ("Call {}", "unknown placeholder {}; available: {record_name}, {number_name}, {user_name}, {direction}"),
        ("{record_name.__class__}", "unknown placeholder {record_name.__class__}; available: {record_name}, "
                                    "{number_name}, {user_name}, {direction}"),
        ("{record_name!r}", "unknown placeholder {record_name!r}; available: {record_name}, {number_name}, "
                            "{user_name}, {direction}"),
        ("Call {record_name", "invalid template (expected '}' before end of string); write {{ and }} for "
                              "literal braces"),
        ("", 'expected a non-empty string, got ""'),
    ],
)
def test_bad_subject_templates(template: str, expected: str) -> None:
    assert problems_of(data(salesforce={"task": {"subjects": {"missed": template}}})) == [
        f"salesforce.task.subjects.missed: {expected}"
    ]


def test_literal_braces_in_subjects() -> None:
    subjects = parse_settings(data(salesforce={"task": {"subjects": {"missed": "{{Aircall}} {record_name}"}}}),
                              environ={}).salesforce.task.subjects
    assert subjects.missed.format(record_name="Ada") == "{Aircall} Ada"


# --- environment ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-${B}-post", {"A": "1", "B": "2"}, "pre-1-2-post"),
        ("$${A}", {}, "${A}"),
        ("a$b$$c", {}, "a$b$$c"),
        ("${A}${A}", {"A": "z"}, "zz"),
        ("${A}", {"A": "${B}", "B": "no"}, "${B}"),  # no second round: values are data
    ],
)
def test_env_expansion(value: str, environ: dict[str, str], expected: str) -> None:
    settings = parse_settings(data(front={"inbox": value}), environ=environ)
    assert settings.front.inbox == expected


def test_env_expansion_everywhere_including_arrays_and_secrets() -> None:
    settings = parse_settings(
        {"aircall": {"api_id": "${ID}", "api_token": "${TOKEN}"},
         "sync": {"lag": "${LAG}", "business_hours": {"days": ["${D1}", "tue"]}}},
        environ={"ID": "42", "TOKEN": "s3cr3t", "LAG": "5m", "D1": "mon"},
    )
    assert settings.aircall.api_id == "42"
    assert settings.aircall.api_token.reveal() == "s3cr3t"
    assert settings.sync.lag == dt.timedelta(minutes=5)
    assert settings.sync.business_hours.days == ("mon", "tue")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRCALL_SYNC_TEST_ID", "from-os")
    settings = parse_settings({"aircall": {"api_id": "${AIRCALL_SYNC_TEST_ID}", "api_token": "t"}})
    assert settings.aircall.api_id == "from-os"


def test_missing_env_variable() -> None:
    assert problems_of({"aircall": {"api_id": "1", "api_token": "${AIRCALL_API_TOKEN}"}}) == [
        "aircall.api_token: environment variable AIRCALL_API_TOKEN is not set"
    ]


def test_several_missing_variables_in_one_value() -> None:
    assert problems_of(data(sync={"state_path": "${A}/${B}/${A}"})) == [
        "sync.state_path: environment variable A is not set",
        "sync.state_path: environment variable B is not set",
    ]


def test_empty_env_variable_for_a_required_key() -> None:
    assert problems_of({"aircall": {"api_id": "1", "api_token": "${AIRCALL_API_TOKEN}"}},
                       {"AIRCALL_API_TOKEN": ""}) == [
        "aircall.api_token: is required (environment variable AIRCALL_API_TOKEN is empty)"
    ]


@pytest.mark.parametrize("value", ["${not valid}", "${", "x${1A}"])
def test_malformed_env_reference(value: str) -> None:
    assert problems_of(data(front={"inbox": value})) == [
        'front.inbox: malformed environment reference: write ${NAME} (or $${ for a literal "${")'
    ]


def test_missing_env_in_disabled_sections_is_fine() -> None:
    settings = parse_settings(
        data(salesforce={"enabled": False, "access_token": "${SF_TOKEN}", "instance_url": "${SF_URL}"},
             front={"enabled": False, "api_token": "${FRONT_API_TOKEN}",
                    "call_flow": {"missed": "${FLOW}"}}),
        environ={},
    )
    assert not settings.front.api_token and settings.salesforce.instance_url == ""
    assert settings.front.call_flow.missed == "open"


def test_disabled_sections_still_check_keys_and_types() -> None:
    assert problems_of(data(salesforce={"enabled": False, "batch_size": 500, "mood": "x"},
                            front={"enabled": False, "activities": "both"})) == [
        "salesforce.mood: unknown key (did you mean \"mode\"?)",
        "salesforce.batch_size: expected an integer from 1 to 200, got 500",
        "front.activities: expected one of separate, combined, got \"both\"",
    ]


# --- unknown keys -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"sync": {"lagg": "1m"}}, 'sync.lagg: unknown key (did you mean "lag"?)'),
        ({"sync": {"time_zone": "UTC"}}, 'sync.time_zone: unknown key (did you mean "timezone"?)'),
        ({"salesforse": {}}, 'salesforse: unknown key (did you mean "salesforce"?)'),
        ({"salesforce": {"call_flow": {"mised": "open"}}},
         'salesforce.call_flow.mised: unknown key (did you mean "missed"?)'),
        ({"salesforce": {"task": {"subject": {}}}},
         'salesforce.task.subject: unknown key (did you mean "subjects"?)'),
        ({"sync": {"business_hours": {"strat": "08:00"}}},
         'sync.business_hours.strat: unknown key (did you mean "start"?)'),
        ({"sync": {"inbox": "x"}}, 'sync.inbox: unknown key (did you mean "front.inbox"?)'),
        ({"sync": {"xyzzy": 1}}, "sync.xyzzy: unknown key"),
        ({"webhooks": {"x": 1}}, "webhooks: unknown key"),
    ],
)
def test_unknown_keys(doc: dict[str, Any], expected: str) -> None:
    assert problems_of(data(**doc)) == [expected]


# --- all problems at once; files ---------------------------------------------------------

FOUR_PROBLEMS = """\
[aircall]
api_id = "1"
api_token = "${AIRCALL_API_TOKEN}"

[sync]
lagg = "30m"
revisit = "1 day"

[salesforce.call_flow]
missed = "opn"
"""


def test_every_problem_at_once(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text(FOUR_PROBLEMS, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(file, environ={})
    assert info.value.problems == [
        "aircall.api_token: environment variable AIRCALL_API_TOKEN is not set",
        'sync.lagg: unknown key (did you mean "lag"?)',
        'sync.revisit: expected a duration like "90s", "30m", "24h", "2d" or "1h30m", got "1 day"',
        'salesforce.call_flow.missed: expected one of completed, open, skip, got "opn"',
    ]
    assert info.value.path == str(file)
    assert str(info.value).startswith(f"4 problem(s) in {file}:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[aircall]\napi_id = \n', "line 2, column 10: TOML syntax error: Invalid value"),
        ('[aircall]\napi_id = "1"\napi_id = "2"\n', "line 3, column 13: TOML syntax error: Cannot overwrite a value"),
        ('[aircall\n', "line 1, column 9: TOML syntax error: Expected ']' at the end of a table declaration"),
        ('[aircall]\napi_id = "1', "end of file: TOML syntax error: Unterminated string"),
    ],
)
def test_toml_syntax_error(tmp_path: Path, text: str, expected: str) -> None:
    file = tmp_path / "settings.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(file, environ={})
    assert info.value.problems == [expected]
    assert info.value.path == str(file)


def test_toml_syntax_error_does_not_echo_a_secret(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text('[aircall]\napi_token = "hunter2-SECRET\n', encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(file, environ={})
    assert "hunter2" not in str(info.value)


def test_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "settings.toml"
    with pytest.raises(SettingsError) as info:
        load_settings(missing, environ={})
    (problem,) = info.value.problems
    assert str(missing) in problem
    assert "aircall-sync init" in problem and "--config" in problem


def test_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_bytes(b'[aircall]\napi_id = "\xff"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(file, environ={})
    assert info.value.problems == [f"{file}: not UTF-8 text (byte 20)"]


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_bytes(b'\xef\xbb\xbf[aircall]\napi_id = "1"\napi_token = "t"\n')
    assert load_settings(file, environ={}).aircall.api_id == "1"


def test_relative_paths_are_relative_to_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "jwt.key").write_text("key", encoding="utf-8")
    (conf / "settings.toml").write_text(
        '[aircall]\napi_id = "1"\napi_token = "t"\n'
        '[sync]\nstate_path = "state/db.sqlite3"\n'
        '[salesforce]\nenabled = true\nauth = "jwt"\ninstance_url = "https://x.my.salesforce.com"\n'
        'username = "u@example.com"\nconsumer_key = "ck"\nprivate_key_file = "jwt.key"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # elsewhere, as cron would be
    settings = load_settings("conf/settings.toml", environ={})
    assert settings.sync.state_path == conf.resolve() / "state" / "db.sqlite3"
    assert settings.salesforce.private_key_file == conf.resolve() / "jwt.key"
    assert settings.path == Path("conf/settings.toml")


def test_parse_settings_base_dir(tmp_path: Path) -> None:
    settings = parse_settings(data(sync={"state_path": "s.sqlite3"}), environ={}, base_dir=tmp_path)
    assert settings.sync.state_path == tmp_path / "s.sqlite3"
    absolute = parse_settings(data(sync={"state_path": "/var/lib/a.sqlite3"}), environ={}, base_dir=tmp_path)
    assert absolute.sync.state_path == Path("/var/lib/a.sqlite3")


def test_default_config_path() -> None:
    assert default_config_path({}) == Path("settings.toml")
    assert default_config_path({"AIRCALL_SYNC_CONFIG": "/etc/a.toml"}) == Path("/etc/a.toml")


# --- secrets -----------------------------------------------------------------------------

def test_secret_is_masked() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    assert f"{secret}" == "********"
    assert "%s" % secret == "********"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other") and secret != "hunter2"
    assert bool(secret) and not Secret("")
    with pytest.raises(AttributeError):
        secret._value = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pickle.dumps(secret)


SECRET_KEYS = [
    ("aircall", "api_token"),
    ("salesforce", "access_token"),
    ("salesforce", "consumer_secret"),
    ("salesforce", "password"),
    ("salesforce", "security_token"),
    ("front", "api_token"),
]


@pytest.mark.parametrize(("section", "key"), SECRET_KEYS)
def test_secret_values_are_wrapped_and_masked(section: str, key: str) -> None:
    value = "TOPSECRET-" + key
    settings = parse_settings(data(**{section: {key: value}}), environ={})
    secret = getattr(getattr(settings, section), key)
    assert isinstance(secret, Secret) and secret.reveal() == value
    assert value not in repr(settings) and value not in str(settings)


@pytest.mark.parametrize(("section", "key"), SECRET_KEYS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (987654321, "expected a string, got an integer"),
        (["TOPSECRET"], "expected a string, got an array"),
        ("TOPSECRET${", 'malformed environment reference: write ${NAME} (or $${ for a literal "${")'),
    ],
)
def test_invalid_secret_values_are_not_echoed(section: str, key: str, value: Any, expected: str) -> None:
    problems = problems_of(data(**{section: {key: value}}))
    assert problems == [f"{section}.{key}: {expected}"]
    assert "987654321" not in problems[0] and "TOPSECRET" not in problems[0]


def test_settings_error_never_shows_secret_values() -> None:
    doc = data(
        aircall={"api_token": "AIRCALL-SECRET"},
        salesforce={"enabled": True, "auth": "password", "instance_url": "bad-url",
                    "password": "SF-PASSWORD", "security_token": "SF-SECRET-TOKEN",
                    "consumer_secret": "SF-CONSUMER-SECRET"},
        front={"enabled": True, "api_token": "FRONT-SECRET", "inbox": ""},
    )
    with pytest.raises(SettingsError) as info:
        parse_settings(doc, environ={})
    text = str(info.value) + repr(info.value.problems)
    for secret in ("AIRCALL-SECRET", "SF-PASSWORD", "SF-SECRET-TOKEN", "SF-CONSUMER-SECRET", "FRONT-SECRET"):
        assert secret not in text
    assert "salesforce.username: is required" in text


# --- conditional requirements -------------------------------------------------------------

SF_URL = {"instance_url": "https://acme.my.salesforce.com"}


@pytest.mark.parametrize(
    ("salesforce", "expected"),
    [
        ({"enabled": True, "access_token": "t"},
         ["salesforce.instance_url: is required when salesforce.enabled = true"]),
        ({**SF_URL, "enabled": True, "auth": "token"},
         ['salesforce.access_token: is required when salesforce.auth = "token"']),
        ({**SF_URL, "enabled": True, "auth": "token", "access_token": "t"}, []),
        ({**SF_URL, "enabled": True, "auth": "jwt"},
         ['salesforce.username: is required when salesforce.auth = "jwt"',
          'salesforce.consumer_key: is required when salesforce.auth = "jwt"',
          'salesforce.private_key_file: is required when salesforce.auth = "jwt"']),
        ({**SF_URL, "enabled": True, "auth": "jwt", "username": "u@x.com", "consumer_key": "ck",
          "private_key_file": "/nonexistent/key.pem"},
         ["salesforce.private_key_file: file not found: /nonexistent/key.pem"]),
        ({**SF_URL, "enabled": True, "auth": "client_credentials"},
         ['salesforce.consumer_key: is required when salesforce.auth = "client_credentials"',
          'salesforce.consumer_secret: is required when salesforce.auth = "client_credentials"']),
        ({**SF_URL, "enabled": True, "auth": "client_credentials", "consumer_key": "ck",
          "consumer_secret": "cs"}, []),
        ({**SF_URL, "enabled": True, "auth": "password"},
         ['salesforce.username: is required when salesforce.auth = "password"',
          'salesforce.password: is required when salesforce.auth = "password"']),
        ({**SF_URL, "enabled": True, "auth": "password", "username": "u@x.com", "password": "p"}, []),
        ({**SF_URL, "enabled": True, "auth": "password", "username": "u@x.com", "password": "p",
          "security_token": "st", "consumer_key": "ck", "consumer_secret": "cs"}, []),
        ({**SF_URL, "enabled": True, "auth": "password", "username": "u@x.com", "password": "p",
          "consumer_key": "ck"},
         ["salesforce.consumer_secret: is required when salesforce.consumer_key is set"]),
        ({**SF_URL, "enabled": True, "access_token": "t", "mode": "voice"},
         ['salesforce.voice.call_center_id: is required when salesforce.mode = "voice"']),
        # R-SFV-7: the message says why 63.0 and how to fix it, not only what was expected.
        ({**SF_URL, "enabled": True, "access_token": "t", "mode": "voice", "api_version": "62.0",
          "voice": {"call_center_id": "04v000000000001"}},
         ['salesforce.api_version: "62.0" is too old for salesforce.mode = "voice": Salesforce creates VoiceCall '
          'records through the API only from version 63.0 (R-SFV-7); set api_version = "63.0" or remove the line']),
        ({**SF_URL, "enabled": True, "access_token": "t", "mode": "voice",
          "voice": {"call_center_id": "04v000000000001"}}, []),
        ({**SF_URL, "enabled": True, "access_token": "t", "ca_bundle": "/nonexistent/ca.pem"},
         ["salesforce.ca_bundle: file not found: /nonexistent/ca.pem"]),
        ({**SF_URL, "enabled": True, "access_token": "t", "matching": {"create_case": True}},
         ['salesforce.matching.create_case: expected false unless salesforce.matching.link_to = "case", '
          "got true"]),
        ({**SF_URL, "enabled": True, "access_token": "t",
          "matching": {"create_case": True, "link_to": "case"}}, []),
        ({"enabled": False, "auth": "jwt", "mode": "voice", "api_version": "50.0",
          "private_key_file": "/nonexistent/key.pem"}, []),
        ({"enabled": False}, []),
    ],
)
def test_salesforce_requirements(salesforce: dict[str, Any], expected: list[str]) -> None:
    doc = data(salesforce=salesforce)
    if expected:
        assert problems_of(doc) == expected
    else:
        assert parse_settings(doc, environ={}).salesforce.enabled is salesforce["enabled"]


def test_jwt_with_an_existing_key_file(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    settings = parse_settings(
        data(salesforce={**SF_URL, "enabled": True, "auth": "jwt", "username": "u@x.com",
                         "consumer_key": "ck", "private_key_file": str(key)}),
        environ={},
    )
    assert settings.salesforce.private_key_file == key


@pytest.mark.parametrize(
    ("auth", "env", "expected"),
    [
        # Credentials the auth mode does not read may reference unset variables.
        ("token", {"T": "tok"}, []),
        ("client_credentials", {"CK": "ck", "CS": "cs"}, []),
        ("password", {"U": "u@x.com", "P": "pw"}, []),  # security token and OAuth pair optional
        ("password", {"U": "u@x.com"}, ["salesforce.password: environment variable P is not set"]),
        ("token", {}, ["salesforce.access_token: environment variable T is not set"]),
    ],
)
def test_env_references_of_unused_credentials(auth: str, env: dict[str, str], expected: list[str]) -> None:
    salesforce = {**SF_URL, "enabled": True, "auth": auth, "access_token": "${T}", "username": "${U}",
                  "consumer_key": "${CK}", "consumer_secret": "${CS}", "password": "${P}",
                  "security_token": "${ST}"}
    if expected:
        assert problems_of(data(salesforce=salesforce), env) == expected
    else:
        assert parse_settings(data(salesforce=salesforce), environ=env).salesforce.auth == auth


@pytest.mark.parametrize(
    ("aircall", "expected"),
    [
        ({}, ["aircall.api_id: is required", "aircall.api_token: is required"]),
        ({"api_id": "1"}, ["aircall.api_token: is required"]),
        ({"api_token": "t", "api_id": ""}, ["aircall.api_id: is required"]),
    ],
)
def test_aircall_requirements(aircall: dict[str, Any], expected: list[str]) -> None:
    assert problems_of({"aircall": aircall}) == expected


def test_no_aircall_table_at_all() -> None:
    assert problems_of({}) == ["aircall.api_id: is required", "aircall.api_token: is required"]


def test_front_requirements() -> None:
    assert problems_of(data(front={"enabled": True})) == [
        "front.api_token: is required when front.enabled = true"
    ]
    assert parse_settings(data(front={"enabled": True, "api_token": "f"}), environ={}).front.enabled


# --- the example file -----------------------------------------------------------------------

def test_root_example_is_byte_identical_to_the_packaged_one() -> None:
    assert ROOT_EXAMPLE.read_bytes() == PACKAGED_EXAMPLE.read_bytes()


def test_default_settings_text_is_the_packaged_example() -> None:
    assert default_settings_text() == PACKAGED_EXAMPLE.read_text(encoding="utf-8")


def test_example_loads_with_only_the_aircall_variables(tmp_path: Path) -> None:
    file = tmp_path / "settings.toml"
    file.write_text(default_settings_text(), encoding="utf-8")
    settings = load_settings(file, environ=ENV)
    assert settings.enabled_targets() == []
    assert settings.aircall.api_id == "123456"
    assert settings.aircall.api_token.reveal() == "aircall-token-value"


def test_example_values_are_the_defaults() -> None:
    example = parse_settings(tomllib.loads(default_settings_text()), environ=ENV)
    defaults = parse_settings(data(), environ={})
    assert example.aircall == defaults.aircall
    assert example.sync == defaults.sync
    assert example.front == defaults.front
    placeholders = {"instance_url", "private_key_file"}  # illustrative values in the example
    for f in dataclasses.fields(example.salesforce):
        if f.name not in placeholders:
            assert getattr(example.salesforce, f.name) == getattr(defaults.salesforce, f.name), f.name


def test_example_with_targets_enabled_loads(tmp_path: Path) -> None:
    text = default_settings_text().replace("enabled = false", "enabled = true")
    assert text.count("enabled = true") == 3  # [aircall.ai], [salesforce], [front]
    file = tmp_path / "settings.toml"
    file.write_text(text, encoding="utf-8")
    env = {**ENV, "SALESFORCE_ACCESS_TOKEN": "sf", "FRONT_API_TOKEN": "fr"}
    settings = load_settings(file, environ=env)
    assert settings.enabled_targets() == ["salesforce", "front"]
    assert settings.aircall.ai.enabled
    assert settings.salesforce.access_token.reveal() == "sf"


def _example_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[([a-z_.]+)\]", line.strip())
        if header:
            current = header.group(1)
            assert current not in sections, f"[{current}] appears twice"
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


_KEY_LINE = re.compile(r"#?\s*[a-z_]+\s*=")


def test_example_documents_every_key() -> None:
    sections = _example_sections(default_settings_text())
    is_table = {p for p in toml_key_paths() if isinstance(attr(Settings(), p), _dataclass_types())}
    for path in toml_key_paths():
        if path in is_table:
            assert path in sections, f"[{path}] is missing from the example"
            continue
        table, key = path.rsplit(".", 1)
        body = sections.get(table, [])
        lines = [i for i, line in enumerate(body) if re.match(rf"#?\s*{key}\s*=", line)]
        assert len(lines) == 1, f"{path} should appear once in the example, found {len(lines)}"
        # Above the key, past any run of (commented-out) keys, there is a comment.
        i = lines[0] - 1
        while i >= 0 and _KEY_LINE.match(body[i]):
            i -= 1
        assert i >= 0 and body[i].startswith("#"), f"{path} has no comment"


def test_example_has_no_unknown_tables() -> None:
    sections = set(_example_sections(default_settings_text())) - {""}
    assert sections <= set(toml_key_paths())


# --- init ---------------------------------------------------------------------------------

def test_write_example_creates_a_private_file(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    assert write_example(target, force=False) == target
    assert target.read_text(encoding="utf-8") == default_settings_text()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_write_example_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    target.write_text("mine", encoding="utf-8")
    with pytest.raises(SettingsFileExistsError) as info:
        write_example(target, force=False)
    assert str(info.value) == f"{target} already exists; use --force to overwrite it"
    assert isinstance(info.value, UsageError) and isinstance(info.value, FileExistsError)
    assert target.read_text(encoding="utf-8") == "mine"


def test_write_example_force_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    target.write_text("mine", encoding="utf-8")
    write_example(target, force=True)
    assert target.read_text(encoding="utf-8") == default_settings_text()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.toml"]


# --- robustness ---------------------------------------------------------------------------

_toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["${X}", "$${X}", "${", "30m", "09:00", "UTC", "task", "jwt", "open", "mon"]),
    st.times(), st.dates(),
)
_toml_values = st.recursive(
    _toml_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(sorted({p.rsplit(".", 1)[-1] for p in toml_key_paths()}) + ["x"]),
                      children, max_size=4),
    max_leaves=12,
)


@hyp_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["aircall", "sync", "salesforce", "front", "other"]), _toml_values,
                       max_size=4))
def test_parse_settings_only_ever_raises_settings_error(doc: dict[str, Any]) -> None:
    try:
        parse_settings(doc, environ={"X": "x"})
    except SettingsError as exc:
        assert exc.problems
        assert all(isinstance(p, str) and ": " in p for p in exc.problems)


def test_invalid_auth_adds_no_guessed_requirements() -> None:
    assert problems_of(data(salesforce={**SF_URL, "enabled": True, "auth": "oauth"})) == [
        'salesforce.auth: expected one of token, jwt, client_credentials, password, got "oauth"'
    ]


def test_settings_can_be_copied_and_turned_into_dicts() -> None:
    settings = parse_settings(data(), environ={})
    assert copy.deepcopy(settings) == settings
    as_dict = dataclasses.asdict(settings)
    assert isinstance(as_dict["aircall"]["api_token"], Secret)
    assert "aircall-token-value" not in repr(as_dict)


def test_settings_are_frozen() -> None:
    settings = parse_settings(data(), environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sync.lag = dt.timedelta(0)  # type: ignore[misc]


def test_top_level_must_be_a_table() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(["aircall"], environ={})  # type: ignore[arg-type]
    assert info.value.problems == ['expected a TOML document (a table), got ["aircall"]']


def test_unset_variable_in_a_disabled_subject_falls_back_to_the_locale() -> None:
    front = parse_settings(data(front={"subject_locale": "de", "subjects": {"missed": "${NOPE}"}}),
                           environ={}).front
    assert front.subjects.missed == FRONT_QUALIFICATIONS["de"]["missed"]


# ---------------------------------------------------------------- [live] (DESIGN §10)


def test_live_webhook_token_unset_does_not_stop_other_commands() -> None:
    """Only serve reads it: a cron sync must run without AIRCALL_WEBHOOK_TOKEN in its environment."""
    settings = parse_settings(data(live={"webhook_token": "${AIRCALL_WEBHOOK_TOKEN}"}), environ={})
    assert not settings.live.webhook_token
    settings = parse_settings(data(live={"webhook_token": "${AIRCALL_WEBHOOK_TOKEN}"}),
                              environ={"AIRCALL_WEBHOOK_TOKEN": "s3cret"})
    assert settings.live.webhook_token.reveal() == "s3cret"


@pytest.mark.parametrize(
    ("live", "problem"),
    [
        ({"port": 0}, "live.port: expected an integer from 1 to 65535, got 0"),
        ({"path": "aircall"}, 'live.path: expected a URL path starting with "/", such as "/aircall/webhook", '
                              'got "aircall"'),
        ({"batch_window": "2m"}, 'live.batch_window: expected a duration from "0s" to "1m", got "2m"'),
        ({"reconcile_every": "30s"}, 'live.reconcile_every: expected a duration from "1m" to "1d", got "30s"'),
        ({"keep_events": "1h"}, 'live.keep_events: expected a duration from "1d" to "3650d", got "1h"'),
        ({"max_body_bytes": 10}, "live.max_body_bytes: expected an integer from 1024 to 67108864, got 10"),
        ({"public_url": "hooks.example.com"},
         'live.public_url: expected an http:// or https:// URL such as "https://example.com", '
         'got "hooks.example.com"'),
        ({"tls_cert_file": "cert.pem"}, "live.tls_cert_file: file not found: "),
    ],
)
def test_live_values_are_checked(live: dict, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(data(live=live), environ={}, base_dir="/nonexistent-dir")
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_live_tls_needs_both_files(tmp_path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError) as caught:
        parse_settings(data(live={"tls_cert_file": str(cert)}), environ={})
    assert caught.value.problems == [
        "live.tls_key_file: is required when the other TLS file is set (uvicorn serves HTTPS with both, "
        "plain HTTP behind a TLS proxy with neither)"]

"""The plan (DESIGN §3 dry-run JSON): diff, same_value, summarize, Change.to_json."""

from __future__ import annotations

import json

import pytest

from aircall_sync.plan import Action, Change, diff, same_value, summarize

DESIRED = {
    "Subject": "Inbound call answered",
    "CallDurationInSeconds": 88,
    "Description": "Line 1\nLine 2",
    "ActivityDate": "2026-09-28",
    "Type": "Call",
    "TaskSubtype": "Call",
    "IsVisibleInSelfService": False,
    "WhoId": None,
}


# ------------------------------------------------------------ diff


@pytest.mark.parametrize("create_only", [(), ("TaskSubtype", "Type")])
def test_diff_create_when_no_record_sends_every_field(create_only):
    action, fields, changes = diff(DESIRED, None, create_only=create_only)
    assert action is Action.CREATE
    assert fields == DESIRED  # create_only fields are sent on create
    assert changes == {}
    fields["Subject"] = "mutated"
    assert DESIRED["Subject"] == "Inbound call answered"  # a copy, not the caller's dict


def test_diff_create_with_empty_current_is_an_update_check_not_a_create():
    # {} is "a record with no values", not "no record".
    action, fields, _ = diff({"Subject": "x"}, {})
    assert action is Action.UPDATE and fields == {"Subject": "x"}


@pytest.mark.parametrize(
    "current, fields, changes",
    [
        # Only what differs is sent, with (old, new).
        (dict(DESIRED, Subject="Old subject"), {"Subject": "Inbound call answered"},
         {"Subject": ("Old subject", "Inbound call answered")}),
        (dict(DESIRED, CallDurationInSeconds=80, Description="Line 1"),
         {"CallDurationInSeconds": 88, "Description": "Line 1\nLine 2"},
         {"CallDurationInSeconds": (80, 88), "Description": ("Line 1", "Line 1\nLine 2")}),
        # A field missing from the record read back counts as null.
        ({k: v for k, v in DESIRED.items() if k != "ActivityDate"}, {"ActivityDate": "2026-09-28"},
         {"ActivityDate": (None, "2026-09-28")}),
        # Clearing a value is a change too.
        (dict(DESIRED, WhoId="003000000000001AAA"), {"WhoId": None}, {"WhoId": ("003000000000001AAA", None)}),
        (dict(DESIRED, IsVisibleInSelfService=True), {"IsVisibleInSelfService": False},
         {"IsVisibleInSelfService": (True, False)}),
    ],
)
def test_diff_update_sends_only_changed_fields(current, fields, changes):
    action, sent, found = diff(DESIRED, current, create_only=("TaskSubtype", "Type"))
    assert action is Action.UPDATE
    assert sent == fields
    assert found == changes


def test_diff_update_ignores_fields_the_record_has_but_we_do_not_write():
    current = dict(DESIRED, OwnerId="005000000000001AAA", Status="Completed", Id="00T000000000001AAA")
    assert diff(DESIRED, current)[0] is Action.NOOP


@pytest.mark.parametrize(
    "current",
    [
        dict(DESIRED),
        dict(DESIRED, CallDurationInSeconds=88.0, Description="Line 1\r\nLine 2", WhoId=""),
    ],
)
def test_diff_noop(current):
    assert diff(DESIRED, current, create_only=("TaskSubtype",)) == (Action.NOOP, {}, {})


@pytest.mark.parametrize(
    "current",
    [
        dict(DESIRED, TaskSubtype="Email", Type="Other"),  # changed by hand in Salesforce
        {k: v for k, v in DESIRED.items() if k not in ("TaskSubtype", "Type")},  # not read back
    ],
)
def test_diff_create_only_fields_never_compared_or_sent_on_update(current):
    create_only = ("TaskSubtype", "Type")
    assert diff(DESIRED, current, create_only=create_only) == (Action.NOOP, {}, {})
    action, sent, changes = diff(DESIRED, dict(current, Subject="stale"), create_only=create_only)
    assert action is Action.UPDATE
    assert sent == {"Subject": "Inbound call answered"}
    assert set(changes) == {"Subject"}
    # Without create_only they would be compared (the table above is not vacuous).
    assert {"TaskSubtype", "Type"} <= set(diff(DESIRED, current)[1])


def test_diff_create_only_accepts_any_iterable():
    current = dict(DESIRED, TaskSubtype="Email")
    assert diff(DESIRED, current, create_only=iter(["TaskSubtype"]))[0] is Action.NOOP
    assert diff(DESIRED, current, create_only={"TaskSubtype"})[0] is Action.NOOP


# ------------------------------------------------------------ same_value


@pytest.mark.parametrize(
    "current, desired, same",
    [
        (None, "", True),
        ("", None, True),
        (None, None, True),
        ("", "", True),
        (5, 5.0, True),
        (5.0, 5, True),
        (0, 0.0, True),
        (12.5, 12.5, True),
        (5, 6, False),
        (5, 5.5, False),
        (0.1 + 0.2, 0.3, True),  # float noise is not a change
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (False, None, False),
        (None, False, False),
        (0, None, False),
        (None, 0, False),
        (0, "", False),
        # A number written to a text field reads back as text (e.g. aircall__Hour_of_the_day__c):
        # the same value, or every run would rewrite it.
        ("5", 5, True),
        ("16", 16.0, True),
        ("five", 5, False),
        # Text we want (desired) against a number the org holds is a real change.
        (5, "5", False),
        ("abc", "abc", True),
        ("abc", "ABC", False),
        ("a\r\nb\r\nc", "a\nb\nc", True),
        ("a\nb", "a\r\nb", True),
        ("a\nb", "a b", False),
        ("2026-09-28", "2026-09-28", True),
        ("2026-09-28", "2026-09-29", False),
        (" x", "x", False),
        (["a"], ["a"], True),
        (["a"], ["b"], False),
    ],
)
def test_same_value(current, desired, same):
    assert same_value(current, desired) is same


# ------------------------------------------------------------ summarize


def change(action: Action, target: str = "salesforce", obj: str = "Task", call_id: int = 1) -> Change:
    return Change(call_id=call_id, target=target, object=obj, action=action)


def test_summarize_counts_per_target_object_action():
    changes = [
        change(Action.CREATE),
        change(Action.CREATE, call_id=2),
        change(Action.UPDATE, call_id=3),
        change(Action.NOOP, call_id=4),
        change(Action.CREATE, obj="Lead", call_id=2),
        change(Action.SKIP, call_id=5),
        change(Action.CREATE, target="front", obj="message"),
        change(Action.CREATE, target="front", obj="message", call_id=2),
        change(Action.SKIP, target="front", obj="conversation", call_id=5),
    ]
    summary = summarize(changes)
    assert summary == {
        "salesforce": {"Task": {"create": 2, "update": 1, "noop": 1, "skip": 1}, "Lead": {"create": 1}},
        "front": {"message": {"create": 2}, "conversation": {"skip": 1}},
    }
    json.dumps(summary)  # part of --format json


def test_summarize_empty_and_generator():
    assert summarize([]) == {}
    assert summarize(change(Action.NOOP, call_id=i) for i in range(3)) == {"salesforce": {"Task": {"noop": 3}}}


# ------------------------------------------------------------ Change.to_json (DESIGN §3)


@pytest.mark.parametrize(
    "made, expected",
    [
        (Change(4186780376, "salesforce", "Task", Action.CREATE, fields={"Subject": "s", "CallDurationInSeconds": 88}),
         {"call_id": 4186780376, "target": "salesforce", "object": "Task", "action": "create",
          "fields": {"Subject": "s", "CallDurationInSeconds": 88}}),
        (Change(7, "salesforce", "Task", Action.UPDATE, fields={"Subject": "new"}, diff={"Subject": ("old", "new")}),
         {"call_id": 7, "target": "salesforce", "object": "Task", "action": "update",
          "fields": {"Subject": "new"}, "diff": {"Subject": ["old", "new"]}}),
        (Change(7, "salesforce", "Task", Action.UPDATE, fields={"WhoId": None}, diff={"WhoId": ("003X", None)}),
         {"call_id": 7, "target": "salesforce", "object": "Task", "action": "update",
          "fields": {"WhoId": None}, "diff": {"WhoId": ["003X", None]}}),
        (Change(7, "front", "message", Action.NOOP),
         {"call_id": 7, "target": "front", "object": "message", "action": "noop", "fields": {}}),
        (Change(7, "salesforce", "Task", Action.SKIP, reason="call flow"),
         {"call_id": 7, "target": "salesforce", "object": "Task", "action": "skip", "fields": {},
          "reason": "call flow"}),
    ],
)
def test_change_to_json_keys(made, expected):
    out = made.to_json()
    assert out == expected
    assert json.loads(json.dumps(out)) == expected  # JSON-native: lists, not tuples
    assert type(out["call_id"]) is int  # call ids are JSON integers


@pytest.mark.parametrize("action", [Action.CREATE, Action.NOOP, Action.SKIP])
def test_change_to_json_diff_only_for_updates(action):
    made = Change(1, "salesforce", "Task", action, fields={"Subject": "x"}, diff={"Subject": ("a", "x")})
    assert "diff" not in made.to_json()


def test_change_to_json_update_diff_matches_diff_output():
    current = dict(DESIRED, Subject="Old", CallDurationInSeconds=12)
    action, fields, changes = diff(DESIRED, current)
    out = Change(9, "salesforce", "Task", action, fields=fields, diff=changes).to_json()
    assert out["action"] == "update"
    assert out["fields"] == {"Subject": DESIRED["Subject"], "CallDurationInSeconds": 88}
    assert out["diff"] == {"Subject": ["Old", DESIRED["Subject"]], "CallDurationInSeconds": [12, 88]}
    assert set(out["diff"]) == set(out["fields"])


def test_change_to_json_optional_keys():
    made = Change(1, "salesforce", "Lead", Action.CREATE, fields={"LastName": "x"}, record_id="00Q1",
                  note="unknown number: new Lead", warnings=["invalid number"])
    out = made.to_json()
    assert {k: out[k] for k in ("record_id", "note", "warnings")} == {
        "record_id": "00Q1", "note": "unknown number: new Lead", "warnings": ["invalid number"]}
    out["warnings"].append("mutated")
    assert made.warnings == ["invalid number"]
    assert not {"record_id", "note", "warnings", "reason", "diff"} & set(Change(1, "s", "T", Action.NOOP).to_json())


def test_action_values_are_the_design_words():
    assert [a.value for a in Action] == ["create", "update", "noop", "skip"]

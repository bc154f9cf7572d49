"""The Salesforce Task of a call (mode ``task``): RULES.md §4, as pure functions.

A call, its assessment (RULES §1–2) and what was resolved in the org (the
matched record, an open Case/Opportunity, the Salesforce users, the Task
describe) go in; the Task fields a create sends come out, with the warnings a
run reports and the owner change R-SF-OWNER asks for. Nothing here does I/O, so
each rule is its own function, proven alone by a test that cites its id.

Conventions (the rules are silent on them; see ``build_task``):

* a field whose value is unknown is *left out* of the draft rather than sent as
  ``null``: on create Salesforce applies its default, on update the stored value
  is kept;
* lengths are counted as Salesforce counts them (UTF-16 code units), so a
  character outside the BMP (an emoji in a tag or a comment) counts twice and a
  cut value never overflows its field;
* a cut value ends with ``…``.
"""

from __future__ import annotations

import functools

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aircall_sync import rules
from aircall_sync.aircall.insights import Insights, description_part
from aircall_sync.aircall.models import Call, Comment
from aircall_sync.rules import Assessment, Kind
from aircall_sync.settings import MediaSettings, SalesforceSettings, Settings, TaskSubjects

__all__ = [
    "CREATE_ONLY_FIELDS",
    "DESCRIPTION_MAX",
    "DISPOSITION_MAX",
    "ELLIPSIS",
    "MATCH_OBJECTS",
    "OWNER_MIN_AGE",
    "SUBJECT_MAX",
    "Match",
    "Owner",
    "SfUser",
    "TaskContext",
    "TaskDraft",
    "agent_user",
    "ai_values",
    "answering_user",
    "build_task",
    "comment_parts",
    "custom_fields",
    "description",
    "disposition",
    "media_line",
    "owner",
    "owner_of",
    "reassignment",
    "record_name",
    "sf_length",
    "subject",
    "truncate",
    "update_fields",
    "who_what",
]

SUBJECT_MAX = 255  # Task.Subject
DISPOSITION_MAX = 255  # Task.CallDisposition
DESCRIPTION_MAX = 32_000  # Task.Description
ELLIPSIS = "…"
#: R-SF-OWNER step 1: a Salesforce user younger than this at call time is not picked.
OWNER_MIN_AGE = timedelta(hours=24)
#: R-SF-TASK-1: Salesforce rejects an update that carries these ("field isn't updateable").
CREATE_ONLY_FIELDS = frozenset({"TaskSubtype"})
MATCH_OBJECTS = ("Contact", "Lead", "Account", "PersonAccount")

# User ids start with 005; a record owned by a queue (00G) would hand the Task to
# a queue that may not accept Tasks, so step 2 of R-SF-OWNER only takes users.
_USER_ID_PREFIX = "005"


# ---------------------------------------------------------------- inputs and output


@dataclass(frozen=True)
class Match:
    """The CRM record a call is logged against (resolved elsewhere, R-SF-MATCH-1..5)."""

    object: str  # "Contact" | "Lead" | "Account" | "PersonAccount"
    id: str  # the record id (for PersonAccount: the Account id)
    name: str | None
    owner_id: str | None
    account_id: str | None = None  # Contact.AccountId
    person_contact_id: str | None = None  # PersonAccount's PersonContactId
    created: bool = False  # created by this tool for an unknown number (R-SF-MATCH-4)

    def __post_init__(self) -> None:
        # WhoId/WhatId depend on the object: a typo here would log calls against
        # the wrong field silently, so it fails at once.
        if self.object not in MATCH_OBJECTS:
            raise ValueError(f"unknown match object {self.object!r}; expected one of {', '.join(MATCH_OBJECTS)}")


@dataclass(frozen=True)
class SfUser:
    """A Salesforce user, as R-SF-OWNER needs it."""

    id: str
    email: str
    active: bool
    created_at: datetime  # aware UTC


@dataclass(frozen=True)
class TaskContext:
    """What was resolved in the org for one call."""

    match: Match | None
    #: An open Case/Opportunity already chosen (R-SF-MATCH-6); used for Contacts only.
    what_id: str | None
    #: Keys are lower-cased e-mail addresses.
    users_by_email: Mapping[str, SfUser]
    integration_user_id: str
    #: Task field names present in the org's describe; ``None`` = don't filter.
    task_fields: frozenset[str] | None
    #: Lower-cased Task field name -> its length (text fields), to cut AI insights to fit (R-AI-4).
    field_lengths: Mapping[str, int] | None = None


@dataclass(frozen=True)
class TaskDraft:
    """The Task a create sends, what the run should report, and an owner change."""

    #: JSON-ready (str/int/bool), dates as ``YYYY-MM-DD``; unknown values are left out.
    fields: dict[str, Any]
    warnings: tuple[str, ...]
    #: ``(record id, new owner id)`` when R-SF-OWNER moves an integration-owned record.
    reassign: tuple[str, str] | None


@dataclass(frozen=True)
class Owner:
    """The Task owner chosen by R-SF-OWNER, and why (for ``explain`` and dry runs)."""

    id: str
    step: int  # 1, 2 or 3, as numbered in R-SF-OWNER
    source: str  # "answering user" | "record owner" | "fallback owner" | "integration user"
    #: The Salesforce user matched in step 1 (also set when step 1 chose).
    user: SfUser | None = None


# ---------------------------------------------------------------- lengths


def sf_length(text: str) -> int:
    """Length as Salesforce counts it: UTF-16 code units (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit``, else cut at the end with ``…`` to exactly fit.

    Never splits a character: a 2-unit character that would straddle the limit
    is dropped whole (the result is then one unit short of ``limit``).
    """
    if sf_length(text) <= limit:
        return text
    budget = limit - sf_length(ELLIPSIS)
    if sf_length(text) == len(text):  # BMP only: one unit per character
        return text[:budget] + ELLIPSIS
    used = 0
    end = 0
    for end, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > budget:
            break
        used += width
    return text[:end] + ELLIPSIS


# ---------------------------------------------------------------- R-SF-SUBJ


def record_name(assessment: Assessment, match: Match | None) -> str:
    """R-SF-SUBJ ``{record_name}``: the record's name, else the number, else ``anonymous``."""
    if match is not None and match.name and match.name.strip():
        return match.name.strip()
    if assessment.external is not None:
        return assessment.external.international
    return "anonymous"


def _number_name(call: Call) -> str:
    number = call.number
    if number is None:
        return ""
    return number.name or number.digits or number.e164_digits or ""


def _agent_name(call: Call) -> str:
    # The person who handled the call: whoever answered (R-CALL-9), else the
    # user who placed an unanswered outbound call (or was rung on a missed one).
    agent = rules.answered_by(call) if rules.is_answered(call) else call.user
    return (agent.name or "") if agent else ""


def _direction(call: Call) -> str:
    return "inbound" if rules.is_inbound(call) else "outbound"


def subject(call: Call, assessment: Assessment, match: Match | None, subjects: TaskSubjects) -> str:
    """R-SF-SUBJ: the configured template (conference variant per R-CALL-3), ≤ 255.

    Placeholders: ``{record_name}``, ``{number_name}`` (the Aircall number's name,
    else its digits), ``{user_name}`` (the agent, empty when none) and
    ``{direction}``. An empty placeholder leaves no doubled or trailing space.
    """
    template = subjects.template(assessment.kind.value, assessment.conference)
    text = template.format_map(
        {
            "record_name": record_name(assessment, match),
            "number_name": _number_name(call),
            "user_name": _agent_name(call),
            "direction": _direction(call),
        }
    )
    # Subject is a one-line field: a newline in a CRM name would be shown as-is.
    return truncate(" ".join(text.split()), SUBJECT_MAX)


# ---------------------------------------------------------------- R-SF-DISP


def _quote(text: str) -> str:
    """A Python single-quoted literal of ``text`` that ``ast.literal_eval`` reads back.

    ``repr`` alone switches to double quotes for a text containing ``'``; with a
    ``"`` appended it always picks single quotes and escapes ``'`` (and control
    characters, and backslashes); the appended ``"`` is then removed.
    """
    return repr(text + '"')[:-2] + "'"


def _list_literal(items: list[str]) -> str:
    return "[" + ", ".join(_quote(item) for item in items) + "]"


def _disposition_fixed(call: Call) -> list[str]:
    e164 = rules.aircall_number_e164(call)
    # An unknown Aircall number is written as '' rather than left out, so the
    # items after 'aircall' keep their positions for whoever parses the field.
    fixed = [
        "aircall",
        _direction(call),
        "answered_call" if rules.is_answered(call) else "unanswered_call",
        e164.lstrip("+") if e164 else "",
    ]
    if call.missed_call_reason:
        # The six documented reasons are short; an unknown, long one must not push the
        # fixed part past 255 on its own (the call would fail with STRING_TOO_LONG).
        fixed.append(call.missed_call_reason[:64])
    return fixed


def disposition(call: Call) -> tuple[str, tuple[str, ...]]:
    """R-SF-DISP: ``CallDisposition`` and the tags dropped to fit 255 characters.

    ``['tag_1', …, 'aircall', direction, answered_call|unanswered_call, number,
    reason]``: tags first (Aircall's own example), the number in E.164 without
    ``+``, the missed-call reason only when set. Too long ⇒ tags are dropped from
    the end; the fixed part is never touched.
    """
    tags = [tag.name for tag in call.tags]
    fixed = _disposition_fixed(call)
    kept = len(tags)
    text = _list_literal(tags + fixed)
    while kept and sf_length(text) > DISPOSITION_MAX:
        kept -= 1
        text = _list_literal(tags[:kept] + fixed)
    return text, tuple(tags[kept:])


# ---------------------------------------------------------------- R-SF-DESC


def _media_settings(call: Call, sf: SalesforceSettings) -> MediaSettings:
    return sf.voicemail if rules.call_kind(call) is Kind.VOICEMAIL else sf.recording


def _media_for(call: Call, sf: SalesforceSettings, where: str) -> rules.Media | None:
    """The call's media link (R-CALL-8) when its settings store it in ``where``."""
    settings = _media_settings(call, sf)
    if not settings.store or settings.where not in (where, "both"):
        return None
    return rules.media_link(call, settings.link)


def media_line(call: Call, sf: SalesforceSettings) -> str | None:
    """R-SF-DESC first part: the voicemail, else the recording, when kept in the description."""
    media = _media_for(call, sf, "description")
    if media is None:
        return None
    if media.kind == "voicemail":
        return f"Find voicemail here: {media.link}"
    return f"Find the recording here: {media.link}"


_EPOCH = datetime.fromtimestamp(0, UTC)


def _comment_order(comment: Comment) -> tuple[bool, datetime, int]:
    # Oldest first; undated comments after the dated ones; ties by id (Aircall
    # ids grow with time). sorted() is stable, so the API order breaks the rest.
    return (comment.posted_at is None, comment.posted_at or _EPOCH, comment.id if comment.id is not None else -1)


def comment_parts(call: Call) -> list[str]:
    """R-SF-DESC comments, oldest first: ``{agent_name} added a new comment:\\n{content}``.

    A comment posted through the API has no author and is labelled ``API``; an
    author without a name is shown by e-mail.
    """
    parts = []
    for comment in sorted(call.comments, key=_comment_order):
        author = comment.posted_by
        name = (author.name or author.email) if author else None
        parts.append(f"{name or 'API'} added a new comment:\n{comment.content}")
    return parts


def description(call: Call, sf: SalesforceSettings, insights: Insights | None = None
                ) -> tuple[str | None, str | None]:
    """R-SF-DESC: ``Description`` (``None`` when there is nothing to say) and a warning.

    Parts joined by a blank line: the media line, then the comments, then the ``AI insights:``
    part (R-AI-4, when insights are known). Over 32,000 characters ⇒ cut at the end with ``…``
    to exactly 32,000, and a warning.
    """
    line = media_line(call, sf)
    ai = description_part(insights)
    parts = ([line] if line else []) + comment_parts(call) + ([ai] if ai else [])
    if not parts:
        return None, None
    text = "\n\n".join(parts)
    size = sf_length(text)
    if size <= DESCRIPTION_MAX:
        return text, None
    lost = "the end of the comments" if not ai else "its end (the AI insights first)"
    warning = f"Description cut to {DESCRIPTION_MAX:,} characters (was {size:,}): {lost} is lost"
    return truncate(text, DESCRIPTION_MAX), warning


# ---------------------------------------------------------------- R-SF-TASK-4


def who_what(match: Match | None, what_id: str | None) -> tuple[str | None, str | None]:
    """R-SF-TASK-4: ``(WhoId, WhatId)``.

    Contact ⇒ the Contact and the linked Case/Opportunity (R-SF-MATCH-6, if any);
    Lead ⇒ the Lead, never a WhatId (Salesforce rejects it); Account ⇒ WhatId
    only; Person Account ⇒ its PersonContactId and the Account; no match ⇒ none.
    ``what_id`` is ignored for anything but a Contact (R-SF-MATCH-6).
    """
    if match is None:
        return None, None
    if match.object == "Contact":
        return match.id, what_id or None
    if match.object == "Lead":
        return match.id, None
    if match.object == "Account":
        return None, match.id
    return match.person_contact_id or None, match.id  # PersonAccount


# ---------------------------------------------------------------- R-SF-OWNER


def answering_user(call: Call, users_by_email: Mapping[str, SfUser]) -> SfUser | None:
    """R-SF-OWNER step 1: the active Salesforce user behind the answering agent.

    Answered call; the agent of R-CALL-9 has the user's e-mail (case-insensitive);
    the user is active and existed at least 24 h before the call started.
    """
    return agent_user(rules.answered_by(call), call.started_at, users_by_email)


def agent_user(agent, at: datetime, users_by_email: Mapping[str, SfUser]) -> SfUser | None:
    """R-SF-OWNER step 1 for an Aircall user (a call's answering agent, a message's user) at time ``at``:
    the active Salesforce user with that e-mail (case-insensitive), created at least 24 h before ``at``."""
    if agent is None or not agent.email:
        return None
    user = users_by_email.get(agent.email.strip().lower())
    if user is None or not user.active:
        return None
    if user.created_at > at - OWNER_MIN_AGE:
        return None
    return user


def _record_owner(match: Match | None, integration_user_id: str) -> str | None:
    if match is None:
        return None
    if match.owner_id:
        return match.owner_id
    # R-SF-OWNER: records the tool creates belong to the integration user, even
    # when the resolver did not read the owner back.
    return integration_user_id if match.created else None


def owner(
    call: Call,
    match: Match | None,
    users_by_email: Mapping[str, SfUser],
    integration_user_id: str,
    fallback_owner_id: str = "",
) -> Owner:
    """R-SF-OWNER: 1. the answering user; 2. the record's owner; 3. fallback, else integration user."""
    return owner_of(answering_user(call, users_by_email), match, integration_user_id, fallback_owner_id)


def owner_of(user: SfUser | None, match: Match | None, integration_user_id: str, fallback_owner_id: str = ""
             ) -> Owner:
    """R-SF-OWNER given step 1's user (or None): that user, else the record's owner, else fallback/integration."""
    if user is not None:
        return Owner(user.id, 1, "answering user", user)
    record_owner = _record_owner(match, integration_user_id)
    if record_owner and record_owner.startswith(_USER_ID_PREFIX):
        return Owner(record_owner, 2, "record owner")
    if fallback_owner_id:
        return Owner(fallback_owner_id, 3, "fallback owner")
    return Owner(integration_user_id, 3, "integration user")


def reassignment(
    match: Match | None, chosen: Owner, integration_user_id: str, enabled: bool
) -> tuple[str, str] | None:
    """R-SF-OWNER: ``(record id, user id)`` when an integration-owned record goes to the agent.

    Only when step 1 found a user, the matched record is owned by the integration
    user and ``reassign_integration_owned`` is on. A Person Account is moved
    through its Account id.
    """
    if not enabled or match is None or chosen.step != 1 or chosen.user is None:
        return None
    if _record_owner(match, integration_user_id) != integration_user_id:
        return None
    if chosen.user.id == integration_user_id:
        return None  # the agent is the integration user: nothing moves
    return match.id, chosen.user.id


# ---------------------------------------------------------------- R-SF-FIELDS


def custom_fields(call: Call, assessment: Assessment, settings: Settings) -> dict[str, Any]:
    """R-SF-FIELDS: setting key → value, for every field with a value (API names aside).

    Keys are those of ``[salesforce.task.fields]``; a field without a value
    (no agent, no transfer, an outbound call's connection status…) is absent.
    """
    values: dict[str, Any] = {"waiting_time": assessment.wait_seconds}
    agent = rules.answered_by(call)
    if agent is not None and agent.name:
        values["answered_by"] = agent.name
    e164 = rules.aircall_number_e164(call)
    if e164:
        values["phone_number"] = e164.lstrip("+")
    if assessment.external is not None and assessment.external.country:
        values["country"] = assessment.external.country
    media = _media_for(call, settings.salesforce, "field")
    if media is not None:
        values["call_recording"] = media.link
    if call.transferred_to is not None and call.transferred_to.name:
        values["transferred_to"] = call.transferred_to.name
    # The zone actually used for the hour, so the two fields always agree (a
    # number without a usable time zone falls back to sync.timezone).
    zone = rules.zone_for(call, settings.sync.tzinfo)
    values["timezone"] = zone.key
    values["hour_of_day"] = call.started_at.astimezone(zone).hour
    if rules.is_inbound(call):
        connected = rules.is_answered(call)
        values["connection_status"] = "connected" if connected else "not connected"
        values["has_connected"] = connected
    return values


def ai_values(insights: Insights | None) -> dict[str, str]:
    """R-AI-4: ``ai_*`` setting key -> the insight's text (R-AI-3), for the insights known (uncut)."""
    return {f"ai_{kind}": text for kind, text in (insights.known() if insights else {}).items()}


def cut_to_field(text: str, length: int | None) -> tuple[str, bool]:
    """R-AI-4: a text longer than its field is cut at the end with ``…``; ``(text, was it cut)``."""
    if length is None or length <= 0 or sf_length(text) <= length:
        return text, False
    return truncate(text, length), True


# ---------------------------------------------------------------- the Task


def _missing_field_warning(name: str, custom_key: str | None) -> str:
    if custom_key is not None and custom_key.startswith("ai_"):
        return (
            f"Task field {name} is not in the org: the AI {custom_key[3:].replace('_', ' ')} is left out; create "
            f'it, or turn it off with salesforce.task.fields.{custom_key} = ""'
        )
    if custom_key is not None:
        return (
            f"Task field {name} is not in the org: left out; create it, or turn it off with "
            f'salesforce.task.fields.{custom_key} = ""'
        )
    if name == "Type":
        return (
            "Task field Type is not visible to the integration user: left out (R-SF-TASK-6); "
            "give that user's profile access to Task.Type (field-level security)"
        )
    if name == "RecordTypeId":
        return (
            "Task field RecordTypeId is not in the org (no Task record types): left out; "
            'set salesforce.task.record_type_id = ""'
        )
    return f"Task field {name} is not in the org: left out"


def build_task(call: Call, assessment: Assessment, ctx: TaskContext, settings: Settings) -> TaskDraft:
    """RULES §4 (mode ``task``): the Task a create sends for one call.

    R-SF-TASK-1..6, R-SF-SUBJ, R-SF-DISP, R-SF-DESC, R-SF-FIELDS and R-SF-OWNER.
    ``assessment.decisions["salesforce"]`` must be ``completed`` or ``open``.
    Values that are unknown (no WhoId, no Description…) are left out, not sent
    as ``null``. Fields absent from ``ctx.task_fields`` are left out with a
    warning each; the org's spelling of a field name is used.
    """
    sf = settings.salesforce
    task = sf.task
    warnings: list[str] = []
    flow = assessment.decisions["salesforce"].flow

    fields: dict[str, Any] = {
        "Subject": subject(call, assessment, ctx.match, task.subjects),
        "Type": "Call",
        "TaskSubtype": "Call",
        "Status": task.status_for(str(flow)),
        "ActivityDate": call.started_at.astimezone(UTC).date().isoformat(),
        "CallType": "Inbound" if rules.is_inbound(call) else "Outbound",
        "CallDurationInSeconds": assessment.talk_seconds,
        "CallObject": str(call.id),
    }
    fields["CallDisposition"], dropped = disposition(call)
    if dropped:
        warnings.append(
            f"CallDisposition over {DISPOSITION_MAX} characters: {len(dropped)} tag(s) left out: "
            + ", ".join(dropped)
        )
    ai_on = settings.aircall.ai.enabled
    text, warning = description(call, sf, assessment.insights if ai_on else None)
    if text is not None:
        fields["Description"] = text
    if warning:
        warnings.append(warning)
    who, what = who_what(ctx.match, ctx.what_id)
    if who:
        fields["WhoId"] = who
    if what:
        fields["WhatId"] = what
    chosen = owner(call, ctx.match, ctx.users_by_email, ctx.integration_user_id, sf.matching.fallback_owner_id)
    fields["OwnerId"] = chosen.id
    if task.record_type_id:
        fields["RecordTypeId"] = task.record_type_id

    # Which setting turns each custom field off, to name it in a warning.
    custom_key_of: dict[str, str] = {}
    values = custom_fields(call, assessment, settings)
    if ai_on:
        for key, value in ai_values(assessment.insights).items():
            length = (ctx.field_lengths or {}).get(task.fields.enabled(ai=True).get(key, "").lower())
            values[key], cut = cut_to_field(value, length)
            if cut:
                warnings.append(f"Task field {task.fields.enabled(ai=True)[key]} holds {length:,} characters: the "
                                f"AI {key[3:].replace('_', ' ')} is cut with …")
    taken = {name.lower(): name for name in fields}
    for key, api_name in task.fields.enabled(ai=ai_on).items():
        clash = taken.get(api_name.lower())
        if clash is not None:
            # Custom fields never overwrite what the rules set, nor each other.
            warnings.append(
                f"salesforce.task.fields.{key} names Task field {api_name}, already written "
                f"({clash}): left out"
            )
            continue
        custom_key_of[api_name] = key
        taken[api_name.lower()] = api_name
        if key in values:
            fields[api_name] = values[key]

    if ctx.task_fields is not None:
        # API names are case-insensitive; send them as the org spells them.
        org_names = _org_names(ctx.task_fields)
        checked = [*fields, *(name for name in custom_key_of if name not in fields)]
        kept: dict[str, Any] = {}
        for name in checked:
            org_name = org_names.get(name.lower())
            if org_name is None:
                warnings.append(_missing_field_warning(name, custom_key_of.get(name)))
            elif name in fields:
                kept[org_name] = fields[name]
        fields = kept

    return TaskDraft(
        fields=fields,
        warnings=tuple(warnings),
        reassign=reassignment(ctx.match, chosen, ctx.integration_user_id, sf.matching.reassign_integration_owned),
    )


@functools.lru_cache(maxsize=8)
def _org_names(task_fields: frozenset[str]) -> dict[str, str]:
    # The org's describe is the same for every call of a run: build the map once.
    return {name.lower(): name for name in task_fields}


def update_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """What an update may send (R-FLOW-3): the create's fields minus ``TaskSubtype`` (R-SF-TASK-1)."""
    create_only = {name.lower() for name in CREATE_ONLY_FIELDS}
    return {name: value for name, value in fields.items() if name.lower() not in create_only}

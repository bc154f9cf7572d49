"""The Service Cloud Voice records of a call (mode ``voice``): RULES.md §5, as pure functions.

A call, its assessment (RULES §1–2) and what was resolved in the org (the
matched record, the describes of VoiceCall and of the Aircall Voice object) go
in; the fields a ``VoiceCall`` create sends (R-SFV-2) and those of its Aircall
Voice record (R-SFV-3) come out, with the warnings a run reports. Nothing here
does I/O. The Task module's conventions hold (see ``salesforce_task``):
unknown values are left out rather than sent as ``null``, values are JSON-ready
(``str``/``int``), lengths are counted in UTF-16 units, a cut value ends with
``…``, API names are matched case-insensitively and sent as the org spells them.

Decisions where RULES.md is silent (each is pinned by a test):

* Date-times are sent as Salesforce writes them back,
  ``2026-10-14T09:30:00.000+0000``: UTC, milliseconds, ``+0000``
  (``sf_datetime``), so what is sent compares equal to what is read.
* ``RelatedRecordId`` is the matched record itself; a Person Account is
  linked through its **Account** id (``Account`` is in the lookup's
  polymorphic list; the record people open is the Account, and sharing
  follows it). A match is never replaced by a Case/Opportunity (R-SFV-2 says
  "matched record"). No match ⇒ left out.
* VoiceCall ``OwnerId`` is not set (R-SF-OWNER is a Task rule): Salesforce
  makes the integration user the owner.
* A call without an Aircall number or without ``ended_at`` cannot fill the
  required ``FromPhoneNumber``/``ToPhoneNumber``/``CallEndDateTime``: the
  field is left out with a warning (R-CALL-5 keeps unfinished calls out of
  runs; ``explain`` may still show them).
* Aircall Voice ``call_id`` is text (``str(call.id)``), as Task ``CallObject``:
  a 64-bit id does not survive a double. ``duration`` is an ``int``.
* ``media_link`` follows ``[salesforce.recording]`` / ``[salesforce.voicemail]``
  ``store`` and ``link``; ``where`` is ignored in voice mode (there is no
  Task Comments to write to, and ``comments`` holds the comment parts only).
* ``contact``/``lead``/``account``: only the lookup of the matched record's
  type is set (a Contact's Account is not copied into ``account``).
* ``tags`` (long text, like ``comments``) over 32,000 units ⇒ whole tags are
  dropped from the end, with a warning (the R-SF-DISP way: no half tag).
* ``assigned_to`` / ``answered_by``: the user's name; a user without a name
  leaves the field out (as R-SF-FIELDS ``answered_by``).
* Two keys of ``[salesforce.voice.fields]`` naming the same API name: the
  first in table order wins (``call_id`` first, so the key always stays), the
  other is left out with a warning.
* The reconciliation key's field (``fields.call_id``) absent from the
  object's describe ⇒ no Aircall Voice record (``None``) and a warning: a
  record that cannot be found again would be duplicated by every re-run.
* Warnings about fields absent from a describe are given for every call, even
  when there is no value (or no record, R-SFV-4) this time, so a run's
  messages do not depend on the mix of calls. The VoiceCall link field
  (``voice_call_link_field``) absent from the VoiceCall describe is warned
  about here; ``link_field_name`` gives the writer its org spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aircall_sync import rules
from aircall_sync.aircall.models import Call
from aircall_sync.rules import Assessment, Kind
from aircall_sync.settings import Settings
from aircall_sync.targets.salesforce_task import Match, ai_values, comment_parts, cut_to_field, sf_length, truncate

__all__ = [
    "ANONYMOUS",
    "COMMENTS_MAX",
    "DETAILED_TYPES",
    "TAGS_MAX",
    "UPDATEABLE_FIELDS",
    "VENDOR_TYPE",
    "VoiceContext",
    "VoiceDraft",
    "aircall_voice_values",
    "build_voice",
    "detailed_type",
    "link_field_name",
    "no_aircall_voice_reason",
    "related_record_id",
    "sf_datetime",
    "voice_call_update_fields",
]

VENDOR_TYPE = "ContactCenter"  # R-SFV-2; Service Cloud Voice always uses it
ANONYMOUS = "anonymous"  # R-SFV-2: the customer's side when there is no external number
COMMENTS_MAX = 32_000  # long text area, R-SF-DESC's limit (R-SFV-3)
TAGS_MAX = 32_000  # long text area
#: R-SFV-8: the VoiceCall fields Salesforce accepts on update (voicecall_fields.json
#: props with "Update"); everything else is create-only. Custom fields (``__c``,
#: e.g. the link to the Aircall Voice record) are updateable as well.
UPDATEABLE_FIELDS = frozenset({"RelatedRecordId", "ActivityId", "CallResolution", "Description", "OwnerId"})

#: R-SFV-3 ``detailed_type``, the Aircall Voice picklist values.
DETAILED_TYPES: dict[Kind, str] = {
    Kind.INBOUND_ANSWERED: "Inbound answered",
    Kind.MISSED: "Missed call",
    Kind.VOICEMAIL: "Voicemail",
    Kind.OUTBOUND_ANSWERED: "Outbound answered",
    Kind.OUTBOUND_UNANSWERED: "Outbound unanswered",
}

# R-SFV-3 lookups: which [salesforce.voice.fields] key holds each match type.
_LOOKUP_KEY = {"Contact": "contact", "Lead": "lead", "Account": "account", "PersonAccount": "account"}


# ---------------------------------------------------------------- inputs and output


@dataclass(frozen=True)
class VoiceContext:
    """What was resolved in the org for one call."""

    match: Match | None
    #: VoiceCall field names in the org's describe; ``None`` = don't filter.
    voice_call_fields: frozenset[str] | None
    #: Field names of the Aircall Voice custom object; ``None`` = don't filter.
    voice_object_fields: frozenset[str] | None
    #: Lower-cased Aircall Voice field name -> its length (text fields), to cut AI insights (R-AI-4).
    voice_object_lengths: Mapping[str, int] | None = None


@dataclass(frozen=True)
class VoiceDraft:
    """The two records a call becomes in mode ``voice``, and what the run should report."""

    #: What a VoiceCall create sends (R-SFV-2). The lookup to the Aircall Voice
    #: record (``voice_call_link_field``) is not here: the writer sets it to the
    #: created record's id.
    voice_call: dict[str, Any]
    #: The Aircall Voice record (R-SFV-3); ``None`` per R-SFV-4, or when its
    #: reconciliation key field is missing from the org.
    aircall_voice: dict[str, Any] | None
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- small rules


def sf_datetime(moment: datetime) -> str:
    """A date-time as Salesforce's REST API spells it: ``2026-10-14T09:30:00.000+0000`` (UTC).

    A naive value is taken as UTC. The year is always four digits.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
        f"{m.microsecond // 1000:03d}+0000"
    )


def detailed_type(kind: Kind | str) -> str:
    """R-SFV-3 ``detailed_type`` of a call kind (R-CALL-2)."""
    return DETAILED_TYPES[Kind(kind)]


def related_record_id(match: Match | None) -> str | None:
    """R-SFV-2 ``RelatedRecordId``: the matched record (a Person Account: its Account id)."""
    return match.id if match is not None else None


def no_aircall_voice_reason(call: Call, assessment: Assessment) -> str | None:
    """R-SFV-4: why the call gets a VoiceCall only, or ``None`` when it gets an Aircall Voice record too.

    A never-answered call (R-CALL-1) whose external number is missing or invalid
    (R-CALL-4), inbound or outbound.
    """
    if rules.is_answered(call):
        return None
    if assessment.external is None:
        return "never answered and no external number (R-SFV-4)"
    if not assessment.external.valid:
        return "never answered and the external number is invalid (R-SFV-4)"
    return None


def _call_type(call: Call) -> str:
    return "Inbound" if rules.is_inbound(call) else "Outbound"


def _media_link(call: Call, settings: Settings) -> str | None:
    sf = settings.salesforce
    media_settings = sf.voicemail if rules.call_kind(call) is Kind.VOICEMAIL else sf.recording
    if not media_settings.store:
        return None
    media = rules.media_link(call, media_settings.link)
    return media.link if media else None


def _tags(call: Call) -> tuple[str | None, tuple[str, ...]]:
    """Tag names joined by ``", "`` and the tags dropped (whole, from the end) to fit."""
    names = [tag.name for tag in call.tags]
    kept = len(names)
    while kept and sf_length(", ".join(names[:kept])) > TAGS_MAX:
        kept -= 1
    return (", ".join(names[:kept]) or None), tuple(names[kept:])


def _comments(call: Call) -> tuple[str | None, int]:
    """R-SF-DESC comment parts joined by a blank line, cut to 32,000; and the uncut length."""
    parts = comment_parts(call)
    if not parts:
        return None, 0
    text = "\n\n".join(parts)
    return truncate(text, COMMENTS_MAX), sf_length(text)


# ---------------------------------------------------------------- R-SFV-2


def _voice_call(call: Call, assessment: Assessment, ctx: VoiceContext, settings: Settings,
                warnings: list[str]) -> dict[str, Any]:
    voice = settings.salesforce.voice
    fields: dict[str, Any] = {"CallType": _call_type(call), "VendorType": VENDOR_TYPE}
    if voice.call_center_id:
        fields["CallCenterId"] = voice.call_center_id
    fields["CallStartDateTime"] = sf_datetime(call.started_at)
    if call.ended_at is not None:
        fields["CallEndDateTime"] = sf_datetime(call.ended_at)
    else:
        warnings.append("VoiceCall CallEndDateTime left out: the call has not ended (Salesforce requires it)")
    customer = assessment.external.e164 if assessment.external is not None else ANONYMOUS
    line = rules.aircall_number_e164(call)
    if rules.is_inbound(call):
        from_number, to_number = customer, line
    else:
        from_number, to_number = line, customer
    if line is None:
        side = "ToPhoneNumber" if rules.is_inbound(call) else "FromPhoneNumber"
        warnings.append(f"VoiceCall {side} left out: the call has no Aircall number (Salesforce requires it)")
    if from_number is not None:
        fields["FromPhoneNumber"] = from_number
    if to_number is not None:
        fields["ToPhoneNumber"] = to_number
    fields["CallDurationInSeconds"] = assessment.talk_seconds
    fields["VendorCallKey"] = str(call.id)
    related = related_record_id(ctx.match)
    if related:
        fields["RelatedRecordId"] = related
    return fields


def _voice_call_missing_warning(name: str) -> str:
    if name == "CallCenterId":
        return ('VoiceCall field CallCenterId is not in the org: left out; give the integration user access to it, '
                'or set salesforce.voice.call_center_id = ""')
    return f"VoiceCall field {name} is not in the org (or not visible to the integration user): left out"


# ---------------------------------------------------------------- R-SFV-3


def aircall_voice_values(call: Call, assessment: Assessment, match: Match | None,
                         settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """R-SFV-3: setting key → value for every field with a value (API names aside), and warnings.

    Keys are those of ``[salesforce.voice.fields]``; a field without a value
    (no answer time, no match, no tags…) is absent.
    """
    warnings: list[str] = []
    values: dict[str, Any] = {
        "call_id": str(call.id),
        "call_type": _call_type(call),
        "detailed_type": detailed_type(assessment.kind),
        "started_at": sf_datetime(call.started_at),
    }
    if call.answered_at is not None:
        values["answered_at"] = sf_datetime(call.answered_at)
    if call.ended_at is not None:
        values["ended_at"] = sf_datetime(call.ended_at)
    values["duration"] = assessment.talk_seconds
    line = rules.aircall_number_e164(call)
    if line:
        values["aircall_number"] = line.lstrip("+")
    if match is not None:
        values[_LOOKUP_KEY[match.object]] = match.id
    link = _media_link(call, settings)
    if link:
        values["media_link"] = link
    tags, dropped = _tags(call)
    if tags:
        values["tags"] = tags
    if dropped:
        warnings.append(f"Aircall Voice tags over {TAGS_MAX:,} characters: {len(dropped)} tag(s) left out")
    comments, size = _comments(call)
    if comments:
        values["comments"] = comments
    if size > COMMENTS_MAX:
        warnings.append(f"Aircall Voice comments cut to {COMMENTS_MAX:,} characters (was {size:,}): "
                        "the end of the comments is lost")
    if call.assigned_to is not None and call.assigned_to.name:
        values["assigned_to"] = call.assigned_to.name
    agent = rules.answered_by(call)
    if agent is not None and agent.name:
        values["answered_by"] = agent.name
    if settings.aircall.ai.enabled:
        values.update(ai_values(assessment.insights))  # R-AI-4 (cut to each field's length by the caller)
    return values, warnings


def _aircall_voice(call: Call, assessment: Assessment, ctx: VoiceContext, settings: Settings,
                   warnings: list[str]) -> dict[str, Any] | None:
    voice = settings.salesforce.voice
    values, value_warnings = aircall_voice_values(call, assessment, ctx.match, settings)
    org_names = ({name.lower(): name for name in ctx.voice_object_fields}
                 if ctx.voice_object_fields is not None else None)
    record: dict[str, Any] = {}
    used: dict[str, str] = {}  # lower-cased API name → the key that claimed it
    key_missing = False
    lengths = ctx.voice_object_lengths or {}
    for key, api_name in voice.fields.enabled(ai=settings.aircall.ai.enabled).items():
        if api_name.lower() in used:
            warnings.append(f"salesforce.voice.fields.{key} names {api_name}, already written "
                            f"(salesforce.voice.fields.{used[api_name.lower()]}): left out")
            continue
        used[api_name.lower()] = key
        org_name = api_name if org_names is None else org_names.get(api_name.lower())
        if org_name is None:
            if key == "call_id":
                key_missing = True
                warnings.append(
                    f"Aircall Voice field {api_name} (the reconciliation key) is not in the org: no Aircall Voice "
                    f"record is written; create it on {voice.aircall_voice_object}, or set "
                    "salesforce.voice.fields.call_id to the field that holds the Aircall call id"
                )
            elif key.startswith("ai_"):
                warnings.append(
                    f"Aircall Voice field {api_name} is not in the org: the AI {key[3:].replace('_', ' ')} is left "
                    f"out; create it on {voice.aircall_voice_object}, or turn it off with "
                    f'salesforce.voice.fields.{key} = ""'
                )
            else:
                warnings.append(
                    f"Aircall Voice field {api_name} is not in the org: left out; create it on "
                    f'{voice.aircall_voice_object}, or turn it off with salesforce.voice.fields.{key} = ""'
                )
            continue
        if key in values:
            value = values[key]
            if key.startswith("ai_"):
                length = lengths.get(org_name.lower())
                value, cut = cut_to_field(value, length)
                if cut:
                    value_warnings.append(f"Aircall Voice field {org_name} holds {length:,} characters: the AI "
                                          f"{key[3:].replace('_', ' ')} is cut with …")
            record[org_name] = value
    if key_missing or no_aircall_voice_reason(call, assessment) is not None:
        return None
    warnings.extend(value_warnings)
    return record


# ---------------------------------------------------------------- both records


def link_field_name(ctx: VoiceContext, settings: Settings) -> str | None:
    """The VoiceCall lookup to the Aircall Voice record as the org spells it; ``None`` when absent."""
    name = settings.salesforce.voice.voice_call_link_field
    if ctx.voice_call_fields is None:
        return name
    return next((f for f in ctx.voice_call_fields if f.lower() == name.lower()), None)


def build_voice(call: Call, assessment: Assessment, ctx: VoiceContext, settings: Settings) -> VoiceDraft:
    """RULES §5 (mode ``voice``): the VoiceCall and the Aircall Voice record of one call.

    R-SFV-1..4. Values that are unknown are left out, not sent as ``null``.
    Fields absent from ``ctx``'s describes are left out with one warning each,
    naming the setting that turns them off; the org's spelling is used.
    """
    warnings: list[str] = []
    voice_call = _voice_call(call, assessment, ctx, settings, warnings)
    if ctx.voice_call_fields is not None:
        org_names = {name.lower(): name for name in ctx.voice_call_fields}
        kept: dict[str, Any] = {}
        for name, value in voice_call.items():
            org_name = org_names.get(name.lower())
            if org_name is None:
                warnings.append(_voice_call_missing_warning(name))
            else:
                kept[org_name] = value
        voice_call = kept
        if link_field_name(ctx, settings) is None:
            link = settings.salesforce.voice.voice_call_link_field
            warnings.append(
                f"VoiceCall field {link} is not in the org: the VoiceCall cannot be linked to its Aircall Voice "
                "record; create that lookup, or set salesforce.voice.voice_call_link_field to the org's lookup"
            )
    aircall_voice = _aircall_voice(call, assessment, ctx, settings, warnings)
    return VoiceDraft(voice_call=voice_call, aircall_voice=aircall_voice, warnings=tuple(warnings))


def voice_call_update_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """R-SFV-8: what a VoiceCall update may send, the updateable fields only.

    ``RelatedRecordId`` (and ``ActivityId``, ``CallResolution``, ``Description``,
    ``OwnerId``, custom ``__c`` fields) are kept; create-only fields
    (``CallType``, the times, the numbers, ``VendorCallKey``…) are dropped.
    """
    updateable = {name.lower() for name in UPDATEABLE_FIELDS}
    return {
        name: value for name, value in fields.items()
        if name.lower() in updateable or name.lower().endswith("__c")
    }

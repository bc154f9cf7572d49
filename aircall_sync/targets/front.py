"""The Front target: RULES.md §6.

A call is logged at the contact level (R-FRONT-1) into the one conversation the
tool keeps open per contact (R-FRONT-2), as imported messages with stable
external ids (R-FRONT-4), plus its comments (R-FRONT-5); an answered call
assigns the conversation to its agent (R-FRONT-6).

Request economy (Front's limit is per company, 50–200/min, reference §1):

- a number not seen before is created straight away (``POST /contacts``); a 409
  means it exists, and only then are its conversations read. A backfill mostly
  meets new contacts, so this costs one request where lookup-then-create costs two;
- a new conversation is opened by the first import with a ``thread_ref``; its id
  is resolved (``GET /messages/alt:uid:…``) only when a comment must be posted
  on it, or in a later run that needs to know whether it was archived;
- a remembered conversation's status is read once per run before it gets a call
  (a message, which resolves the id, carries no status); one this run opened is not;
- the assignment travels in the import (``assignee_id``), not in a PATCH;
- what was imported and commented is recorded, so a re-run sends nothing.

The pure part (text of activities, subjects, import bodies) is separate from the
part that talks to Front, and both are used by the dry run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aircall_sync import message_rules, rules
from aircall_sync.aircall.models import Call, Comment
from aircall_sync.errors import OrgMismatchError
from aircall_sync.plan import Action, Change, Outcome
from aircall_sync.message_rules import MessageAssessment
from aircall_sync.rules import Assessment, Kind
from aircall_sync.targets.front_client import FrontClient, FrontError, conversation_id_of

log = logging.getLogger("aircall_sync.front")

TARGET = "front"
CACHE = "front.conversation"  # e164 -> {"contact_id", "conversation_id", "thread_ref", "uid"}


# ---------------------------------------------------------------- pure mapping


def number_name(call: Call) -> str:
    if call.number is None:
        return ""
    return call.number.name or call.number.digits or ""


def subject(call: Call, a: Assessment, settings) -> str:
    """R-FRONT-3: ``{qualification} - {number_name}``; a voicemail's is the qualification alone."""
    return settings.front.subjects.subject(a.kind.value, number_name(call))


@dataclass(frozen=True, slots=True)
class Activity:
    part: str  # summary | duration | media | combined
    external_id: str
    body: str
    parts: tuple[str, ...]  # the parts this message carries (combined carries several)


def _agent(call: Call) -> str | None:
    agent = rules.answered_by(call) or call.user
    return agent.name if agent else None


def activity_parts(call: Call, a: Assessment, settings) -> dict[str, str]:
    """R-FRONT-4: the text of each activity of a call (media only when there is a link)."""
    line = number_name(call)
    line_number = rules.aircall_number_e164(call) or ""
    qualification = settings.front.subjects.qualification(a.kind.value)
    summary = [f"{qualification} - {line}" if line else qualification,
               f"Line: {line}" + (f" ({line_number})" if line_number else ""),
               f"Customer: {a.external.international if a.external else 'anonymous'}"]
    agent = _agent(call)
    if agent:
        summary.append(f"Agent: {agent}")
    parts = {"summary": "\n".join(summary)}
    minutes, seconds = divmod(a.talk_seconds, 60)
    parts["duration"] = f"Duration: {minutes}m {seconds}s"  # minutes not capped: 75m 3s
    media_settings = settings.salesforce.voicemail if a.kind is Kind.VOICEMAIL else settings.salesforce.recording
    media = rules.media_link(call, media_settings.link)
    if media is not None:
        label = "Voicemail" if media.kind == "voicemail" else "Recording"
        parts["media"] = f"{label}: {media.link}"  # R-FRONT-7: in the same run, no waiting
    return parts


def activities(call: Call, a: Assessment, settings, done: Iterable[str] = ()) -> list[Activity]:
    """The imports still to send for a call; ``done`` are the parts already imported."""
    parts = activity_parts(call, a, settings)
    todo = [p for p in ("summary", "duration", "media") if p in parts and p not in set(done)]
    if not todo:
        return []
    if settings.front.activities == "combined" and not set(done):
        return [Activity("combined", f"aircall-{call.id}-combined", "\n\n".join(parts[p] for p in todo), tuple(todo))]
    # Separate activities, or what a combined import did not carry yet (a recording added later).
    return [Activity(p, f"aircall-{call.id}-{p}", parts[p], (p,)) for p in todo]


def comment_key(comment: Comment) -> str:
    """Stable identity of an Aircall comment, to post it once (R-FRONT-5)."""
    if comment.id is not None:
        return f"comment:{comment.id}"
    digest = hashlib.sha256(f"{comment.posted_at}|{comment.content}".encode()).hexdigest()[:16]
    return f"comment:{digest}"


def import_body(call: Call, a: Assessment, activity: Activity, *, subject_text: str,
                teammate_id: str | None, assignee_id: str | None) -> dict[str, Any]:
    """The body of ``POST /inboxes/{id}/imported_messages`` (core-api.json ``ImportMessage``)."""
    customer = a.external.e164
    line = rules.aircall_number_e164(call) or customer
    inbound = rules.is_inbound(call)
    sender: dict[str, Any] = {"handle": customer if inbound else line}
    name = (call.contact.full_name if call.contact else None) if inbound else _agent(call)
    if name:
        sender["name"] = name
    if not inbound and teammate_id:
        sender["author_id"] = teammate_id
    body: dict[str, Any] = {
        "sender": sender,
        "to": [line if inbound else customer],
        "subject": subject_text,
        "body": activity.body,
        "external_id": activity.external_id,
        "created_at": int(call.started_at.timestamp()),
        # Phone handles: the message joins the contact of R-FRONT-1 (there is no "call" type).
        "type": "sms",
        # R-FRONT-6: open; R-FRONT-3: rules run, so a "Voicemail" subject can be routed.
        "metadata": {"is_inbound": inbound, "is_archived": False, "should_skip_rules": False},
    }
    if assignee_id:
        body["assignee_id"] = assignee_id
    return body


# ---------------------------------------------------------------- messages (R-MSG-5)


MESSAGE_PART = "message"


def message_external_id(message_id: str) -> str:
    """R-MSG-5: the import's ``external_id``, so a message is imported once however often it arrives."""
    return f"aircall-message-{message_id}"


def message_subject(a: MessageAssessment) -> str:
    """The subject of a conversation a message opens (R-FRONT-3 is silent on messages; **decision**:
    ``SMS - {number_name}``, or ``WhatsApp - …``, the words Aircall's apps use in every locale)."""
    word = "WhatsApp" if a.message.whatsapp else "SMS"
    return f"{word} - {a.number_name}" if a.number_name else word


def message_text(a: MessageAssessment) -> str:
    """R-MSG-5 body: the message text; an MMS without text shows its attachments instead (Front needs a body)."""
    message = a.message
    if message.body.strip():
        return message.body
    if message.attachments:
        return "\n".join(f"Attachment: {url}" for url in message.attachments)
    return "(empty message)"


def message_import_body(a: MessageAssessment, *, subject_text: str, teammate_id: str | None) -> dict[str, Any]:
    """R-MSG-5: ``POST /inboxes/{id}/imported_messages`` for a message, as a call's activity is imported:
    ``type: "sms"``, inbound or outbound by its direction, the text, ``external_id`` ``aircall-message-{id}``."""
    message = a.message
    customer = a.external.e164
    line = message_rules.line_e164(message) or customer
    inbound = message.direction != "outbound"
    sender: dict[str, Any] = {"handle": customer if inbound else line}
    name = (message.contact.full_name if message.contact else None) if inbound else (
        message.user.name if message.user else None)
    if name:
        sender["name"] = name
    if not inbound and teammate_id:
        sender["author_id"] = teammate_id
    return {
        "sender": sender,
        "to": [line if inbound else customer],
        "subject": subject_text,
        "body": message_text(a),
        "external_id": message_external_id(message.id),
        "created_at": int(message.created_at.timestamp()),
        "type": "sms",
        "metadata": {"is_inbound": inbound, "is_archived": False, "should_skip_rules": False},
    }


def message_fingerprint(a: MessageAssessment, settings) -> str:
    """What the import of a message depends on; its status does not matter in Front (R-MSG-6)."""
    m = a.message
    payload = [m.id, m.direction, int(m.created_at.timestamp()), m.body, list(m.attachments), m.channel,
               m.customer_digits, a.number_name, settings.derived(_message_settings)]
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:32]


def _message_settings(settings) -> str:
    f = settings.front
    return repr((f.inbox, f.messages, settings.sync.log_messages, settings.sync.business_hours))


def comment_body(comment: Comment) -> str:
    return comment.content


#: R-FRONT-5 tracking key of the AI summary's comment: one per call, posted once (R-AI-4).
AI_COMMENT_KEY = "ai-summary"


def ai_comment_body(call: Call, summary: str, settings) -> str:
    """R-AI-4: the Front comment of a call's AI summary, ``AI summary of the call of {date}:`` then the summary.

    **decision**: ``{date}`` is the call's start in its Aircall number's time zone (else ``sync.timezone``),
    ``YYYY-MM-DD HH:MM (zone)``; the comment holds the summary only (topics, sentiment and action items come
    as separate events in live mode, and a comment is posted once).
    """
    zone = rules.zone_for(call, settings.sync.tzinfo)
    when = call.started_at.astimezone(zone)
    return f"AI summary of the call of {when:%Y-%m-%d %H:%M} ({zone.key}):\n{summary}"


def fingerprint(call: Call, settings, insights=None) -> str:
    payload = [call.direction, call.status, call.answered_at and int(call.answered_at.timestamp()),
               call.ended_at and int(call.ended_at.timestamp()), call.raw_digits, call.asset,
               bool(call.recording), bool(call.voicemail), call.recording_short_url, call.voicemail_short_url,
               [(c.id, c.content) for c in call.comments],
               (rules.answered_by(call).email or "").lower() if rules.answered_by(call) else None,
               settings.derived(_shaping_settings)]
    if settings.aircall.ai.enabled:
        payload.append(["ai", insights.summary if insights else None])  # R-AI-4: the summary's comment
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()[:32]


def _shaping_settings(settings) -> str:
    f = settings.front
    return repr((f.activities, f.subjects, f.call_flow, f.subject_locale, f.inbox, settings.salesforce.recording,
                settings.salesforce.voicemail, settings.sync.log_calls, settings.sync.business_hours))


# ---------------------------------------------------------------- the target


@dataclass
class FrontItem:
    assessment: Assessment | MessageAssessment  # a call, or a message (RULES §7: ``.call`` is None)
    fingerprint: str
    imports: list[Activity] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)
    #: R-AI-4: the AI summary's comment, when it is to be posted (once).
    ai_comment: str | None = None
    outcome: Outcome | None = None


@dataclass
class FrontBatch:
    items: list[FrontItem]
    preview: list[Change] = field(default_factory=list)

    def changes(self) -> list[Change]:
        out = list(self.preview)
        for item in self.items:
            if item.outcome is not None:
                action = Action.SKIP if item.outcome.outcome == "skipped" else Action.NOOP
                out.append(Change(item.assessment.key, TARGET, "message", action, reason=item.outcome.reason,
                                  message_id=item.assessment.message_id))
        return out


class FrontTarget:
    name = TARGET

    def __init__(self, settings, client: FrontClient, state, *, dry_run: bool = False):
        self.settings = settings
        self.front = settings.front
        self.client = client
        self.org = client  # the runner reads .stats of each target's service client
        self.state = state
        self.dry_run = dry_run
        self.inbox_id: str | None = None
        self.teammates: dict[str, str] = {}  # lower-case email -> teammate id
        self._threads: dict[str, dict] = {}  # e164 -> conversation info, this run
        self._checked: set[str] = set()  # conversations whose status was read this run
        # uids of the imports that opened a conversation in this run: that conversation is open
        # (the import said is_archived: false), so resolving its id needs no status read after it.
        self._opened: set[str] = set()

    def start(self) -> None:
        """Find the inbox (by name or ``inb_`` id) and the teammates (by email)."""
        wanted = self.front.inbox
        for inbox in self.client.inboxes():
            if inbox.get("id") == wanted or inbox.get("name") == wanted:
                self.inbox_id = inbox["id"]
                break
        if self.inbox_id is None:
            raise OrgMismatchError(f'Front has no inbox "{wanted}" that this token can see; create it, or set '
                                   "front.inbox to an existing inbox's name or inb_ id")
        for mate in self.client.teammates():
            email = str(mate.get("email") or "").lower()
            if email and mate.get("id"):
                self.teammates[email] = mate["id"]

    def forget(self) -> None:
        """Drop what this run remembers of contacts and conversations: another writer may have
        opened one since (DESIGN §10); the state holds what it recorded."""
        self._threads.clear()
        self._checked.clear()

    def _teammate(self, call: Call) -> str | None:
        agent = rules.answered_by(call)
        return self.teammates.get((agent.email or "").lower()) if agent and agent.email else None

    # ------------------------------------------------------------ plan

    def plan(self, items: Sequence[Assessment | MessageAssessment], *, only_changed: bool = True) -> FrontBatch:
        ids = [a.key for a in items]
        known = self.state.get_records(ids, TARGET)
        posted = self.state.get_posted(ids, TARGET)
        out: list[FrontItem] = []
        for a in items:
            print_ = (message_fingerprint(a, self.settings) if a.call is None
                      else fingerprint(a.call, self.settings, a.insights))
            item = FrontItem(a, print_)
            decision = a.decisions[TARGET]
            record = known.get(a.key)
            if decision.skipped:
                item.outcome = Outcome(a.key, TARGET, "skipped", reason=decision.reason, message_id=a.message_id)
            elif only_changed and record is not None and record.is_written and record.hash == item.fingerprint:
                item.outcome = Outcome(a.key, TARGET, "unchanged", records=dict(record.crm_ids),
                                       fingerprint=item.fingerprint, message_id=a.message_id)
            elif a.call is None:
                # R-MSG-5: one import per message, posted once (a later status changes nothing in Front).
                if f"activity:{MESSAGE_PART}" not in posted.get(a.key, set()):
                    item.imports = [Activity(MESSAGE_PART, message_external_id(a.message.id), message_text(a),
                                             (MESSAGE_PART,))]
                else:
                    item.outcome = Outcome(a.key, TARGET, "unchanged",
                                           records=dict(record.crm_ids) if record else {},
                                           fingerprint=item.fingerprint, message_id=a.message_id)
            else:
                done = {k.split(":", 1)[1] for k in posted.get(a.call.id, set()) if k.startswith("activity:")}
                item.imports = activities(a.call, a, self.settings, done)
                item.comments = [c for c in sorted(a.call.comments, key=lambda c: (c.posted_at is None, c.posted_at))
                                 if comment_key(c) not in posted.get(a.call.id, set()) and c.content.strip()]
                summary = a.insights.summary if a.insights and self.settings.aircall.ai.enabled else None
                if summary and AI_COMMENT_KEY not in posted.get(a.call.id, set()):
                    item.ai_comment = ai_comment_body(a.call, summary, self.settings)
                if not item.imports and not item.comments and not item.ai_comment:
                    item.outcome = Outcome(a.call.id, TARGET, "unchanged",
                                           records=dict(record.crm_ids) if record else {},
                                           fingerprint=item.fingerprint)
            out.append(item)
        batch = FrontBatch(out)
        if self.dry_run:
            batch.preview = self._preview(out)
        return batch

    def _preview(self, items: list[FrontItem]) -> list[Change]:
        """What would be written, looked up read-only (GET by alias instead of create-first)."""
        changes: list[Change] = []
        seen: dict[str, dict] = {}
        for item in items:
            if item.outcome is not None:
                continue
            a = item.assessment
            e164 = a.external.e164
            opening_subject = message_subject(a) if a.call is None else subject(a.call, a, self.settings)
            info = seen.get(e164)
            if info is None:
                info = dict(self.state.cache_get(CACHE, [e164]).get(e164) or {})
                if not info.get("contact_id"):
                    contact = self.client.get_contact(e164)
                    if contact is None:
                        changes.append(Change(a.key, TARGET, "contact", Action.CREATE,
                                              fields={"handles": [{"source": "phone", "handle": e164}]},
                                              note="R-FRONT-1: no Front contact has this phone handle",
                                              message_id=a.message_id))
                    else:
                        info["contact_id"] = contact["id"]
                if not info.get("conversation_id") and not info.get("thread_ref"):
                    changes.append(Change(a.key, TARGET, "conversation", Action.CREATE,
                                          fields={"inbox": self.front.inbox, "subject": opening_subject},
                                          note="R-FRONT-2: the contact has no open conversation from aircall-sync",
                                          message_id=a.message_id))
                    info["thread_ref"] = _thread_ref(a)
                else:
                    # Remembered from an earlier run. Whether an agent archived it since is not read
                    # here (up to two GETs per contact in a read-only preview): say so, not "reused".
                    changes.append(Change(a.key, TARGET, "conversation", Action.NOOP,
                                          record_id=info.get("conversation_id"), message_id=a.message_id,
                                          fields={"subject": info["subject"]} if info.get("subject") else {},
                                          note="R-FRONT-2: remembered from an earlier run; the run reads its "
                                               "status first and, if it was archived or deleted, opens a new "
                                               "conversation whose subject comes from this call"))
                seen[e164] = info
            if a.call is None:
                for activity in item.imports:
                    body = message_import_body(a, subject_text=opening_subject, teammate_id=self._message_teammate(a))
                    changes.append(Change(a.key, TARGET, "message", Action.CREATE, fields=body,
                                          note="R-MSG-5: the message", message_id=a.message_id))
                continue
            teammate = self._teammate(a.call)
            for activity in item.imports:
                body = import_body(a.call, a, activity, subject_text=subject(a.call, a, self.settings),
                                   teammate_id=teammate, assignee_id=teammate if rules.is_answered(a.call) else None)
                changes.append(Change(a.call.id, TARGET, "message", Action.CREATE, fields=body,
                                      note=f"{activity.part} activity"))
            for comment in item.comments:
                author = (comment.posted_by.email or "").lower() if comment.posted_by else ""
                changes.append(Change(a.call.id, TARGET, "comment", Action.CREATE,
                                      fields={"body": comment_body(comment),
                                              "author_id": self.teammates.get(author) or "(the API user)"}))
            if item.ai_comment:
                changes.append(Change(a.call.id, TARGET, "comment", Action.CREATE,
                                      fields={"body": item.ai_comment, "author_id": "(the API user)"},
                                      note="R-AI-4: the call's AI summary, posted once"))
        return changes

    # ------------------------------------------------------------ apply

    def apply(self, batch: FrontBatch) -> list[Outcome]:
        outcomes: list[Outcome] = []
        self._posted: list[tuple[int, str, str]] = []
        for item in batch.items:
            if item.outcome is not None:
                outcomes.append(item.outcome)
                continue
            a = item.assessment
            try:
                records = self._log_message(item) if a.call is None else self._log_call(item)
            except FrontError as exc:
                outcomes.append(Outcome(a.key, TARGET, "failed", error={"code": f"HTTP_{exc.status}",
                                                                        "message": str(exc)},
                                        fingerprint=item.fingerprint, message_id=a.message_id))
                continue
            except Exception as exc:
                # A run-stopping error (a revoked token, Front out of reach) ends Front for the run. The
                # calls logged before it go with it, to be recorded: Front does not deduplicate comments.
                exc.outcomes = outcomes  # type: ignore[attr-defined]
                raise
            outcomes.append(Outcome(a.key, TARGET, "created", records=records, fingerprint=item.fingerprint,
                                    message_id=a.message_id))
        return outcomes

    def _thread(self, item: FrontItem) -> dict:
        """The contact and the open conversation of this call's number (R-FRONT-1, R-FRONT-2)."""
        a = item.assessment
        e164 = a.external.e164
        info = self._threads.get(e164)
        if info is None:
            info = dict(self.state.cache_get(CACHE, [e164]).get(e164) or {})
            if not info.get("contact_id"):
                contact = a.call.contact if a.call is not None else a.message.contact
                name = contact.full_name if contact else None
                status, contact = self.client.create_contact(e164, name)
                if status == 409:  # the handle has a contact already (§2): find it and its conversations
                    contact = contact or self.client.get_contact(e164)
                    if contact is None:
                        raise FrontError(f"Front reported a contact for {e164} but cannot find it", 409)
                    info["contact_id"] = contact["id"]
                    info.update(self._open_conversation(contact["id"]))
                else:
                    info["contact_id"] = contact["id"]
            self._threads[e164] = info
        self._ensure_open(info)
        if not info.get("conversation_id") and not info.get("thread_ref"):
            info["thread_ref"] = _thread_ref(a)
        return info

    def _open_conversation(self, contact_id: str) -> dict:
        """The contact's open conversation in our inbox, if any (fresh state: we can't know it is ours)."""
        for conversation in self.client.contact_conversations(contact_id):
            inbox = (((conversation.get("_links") or {}).get("related") or {}).get("inboxes") or "")
            status = conversation.get("status")
            if status in ("archived", "deleted", "spam", "trashed"):
                continue
            in_ours = self.inbox_id and (self.inbox_id in str(inbox) or self.inbox_id in json.dumps(
                conversation.get("inboxes") or conversation.get("inbox") or ""))
            if in_ours:
                self._checked.add(conversation["id"])  # its status was just read
                return {"conversation_id": conversation["id"], "fresh": True}
        return {}

    def _resolve(self, info: dict) -> str | None:
        """The id of a conversation opened by a thread_ref import (async: retried briefly)."""
        if info.get("conversation_id"):
            return info["conversation_id"]
        uid = info.get("uid")
        if not uid:
            return None
        for delay in (0, 0.2, 0.5, 1, 2, 4):
            if delay:
                self.client.retry.sleep(delay)
            message = self.client.message_by_uid(uid)
            if message is not None:
                info["conversation_id"] = conversation_id_of(message)
                if uid in self._opened:
                    # This run's import opened it. A message carries no conversation status, so
                    # only then may the status read be skipped (R-FRONT-2).
                    self._checked.add(info["conversation_id"])
                return info["conversation_id"]
        return None

    def _ensure_open(self, info: dict) -> None:
        """R-FRONT-2: a conversation archived (or deleted) since the last call is not reused.

        A remembered conversation's status is read once per run, also when its id has just
        been resolved through a message (which says nothing of the conversation's status).
        """
        if not info.get("conversation_id") and info.get("uid") and not info.get("this_run"):
            self._resolve(info)
        conversation_id = info.get("conversation_id")
        if not conversation_id or conversation_id in self._checked:
            return
        conversation = self.client.conversation(conversation_id)  # a merged one: 301 followed
        self._checked.add(conversation_id)
        if conversation is None or conversation.get("status") in ("archived", "deleted", "spam", "trashed"):
            # Gone (404) or closed: the next import opens a new conversation, and R-FRONT-3 fixes
            # its subject from the call that opens it, so the old subject goes with the old thread.
            for key in ("conversation_id", "thread_ref", "uid", "subject", "fresh"):
                info.pop(key, None)
        elif conversation.get("id") and conversation["id"] != conversation_id:
            info["conversation_id"] = conversation["id"]  # merged: the one it lives in now
            self._checked.add(conversation["id"])  # its status was just read through the 301

    def _message_teammate(self, a: MessageAssessment) -> str | None:
        user = a.message.user
        return self.teammates.get((user.email or "").lower()) if user and user.email else None

    def _import(self, info: dict, body: dict, key: int, parts: Iterable[str]) -> None:
        """Import one activity into the contact's conversation: by its id when known, else by the
        thread_ref that opens it; the import that opened it is remembered (its status needs no read)."""
        if info.get("conversation_id"):
            body["conversation_id"] = info["conversation_id"]
        else:
            body["metadata"]["thread_ref"] = info["thread_ref"]
        uid = self.client.import_message(self.inbox_id, body)
        if not info.get("conversation_id") and uid and not info.get("uid"):
            info["uid"] = uid
            info["this_run"] = True
            self._opened.add(uid)
        self._posted.extend((key, TARGET, f"activity:{p}") for p in parts)

    def _log_message(self, item: FrontItem) -> dict[str, str]:
        """R-MSG-5: the message imported into the contact's open conversation (R-FRONT-1, R-FRONT-2)."""
        a = item.assessment
        info = self._thread(item)
        info.setdefault("subject", message_subject(a))  # the subject is fixed by what opened the conversation
        for activity in item.imports:
            body = message_import_body(a, subject_text=info["subject"], teammate_id=self._message_teammate(a))
            self._import(info, body, a.key, activity.parts)
        records = {"contact": info["contact_id"]}
        if info.get("conversation_id"):
            records["conversation"] = info["conversation_id"]
        return records

    def _log_call(self, item: FrontItem) -> dict[str, str]:
        a = item.assessment
        call = a.call
        info = self._thread(item)
        teammate = self._teammate(call)
        subject_text = info.get("subject") or subject(call, a, self.settings)
        info.setdefault("subject", subject_text)  # R-FRONT-3: fixed by the call that opened it
        for activity in item.imports:
            body = import_body(call, a, activity, subject_text=info["subject"], teammate_id=teammate,
                               assignee_id=teammate if rules.is_answered(call) else None)
            self._import(info, body, call.id, activity.parts)
        if item.comments or item.ai_comment:
            conversation_id = self._resolve(info)
            if conversation_id is None:
                raise FrontError("Front has not finished importing the call's message; its comments will be "
                                 "posted by the next run", 202)
            existing = set()
            if info.pop("fresh", False):
                # A conversation found without state: don't post a comment it already has.
                existing = {str(c.get("body") or "") for c in self.client.comments(conversation_id)}
            for comment in item.comments:
                if comment_body(comment) not in existing:
                    author = (comment.posted_by.email or "").lower() if comment.posted_by else ""
                    self.client.add_comment(conversation_id, comment_body(comment), self.teammates.get(author))
                self._posted.append((call.id, TARGET, comment_key(comment)))
            if item.ai_comment:
                # R-AI-4: by the API user (no author_id), once (R-FRONT-5 tracking).
                if item.ai_comment not in existing:
                    self.client.add_comment(conversation_id, item.ai_comment, None)
                self._posted.append((call.id, TARGET, AI_COMMENT_KEY))
        records = {"contact": info["contact_id"]}
        if info.get("conversation_id"):
            records["conversation"] = info["conversation_id"]
        return records

    # ------------------------------------------------------------ state

    def record(self, outcomes: Iterable[Outcome], run_id: int | None) -> None:
        written = []
        for o in outcomes:
            if o.outcome in ("created", "updated", "unchanged") and o.fingerprint and o.records:
                written.append((o.call_id, TARGET, o.records, o.fingerprint))
            elif o.outcome == "failed" and o.error:
                self.state.record_failure(o.call_id, TARGET, "message", o.error["code"], o.error["message"], run_id)
        if written:
            self.state.mark_written(written)
            self.state.clear_failures([w[0] for w in written], TARGET)
        if getattr(self, "_posted", None):
            self.state.mark_posted(self._posted)
            self._posted = []
        keep = {}
        for e164, info in self._threads.items():
            keep[e164] = {k: info[k] for k in ("contact_id", "conversation_id", "thread_ref", "uid", "subject")
                          if info.get(k)}
        if keep:
            self.state.cache_put(CACHE, keep)
        for info in self._threads.values():
            info.pop("this_run", None)


def _thread_ref(a: Assessment | MessageAssessment) -> str:
    """The ``thread_ref`` of the import that opens a contact's conversation (unique per opening item)."""
    ref = f"message-{a.message.id}" if a.call is None else str(a.call.id)
    return f"aircall-{a.external.e164}-{ref}"


def check_front(settings, client: FrontClient) -> tuple[list[str], list[str]]:
    """``check`` for Front: the token works, the inbox exists and is visible."""
    infos: list[str] = []
    problems: list[str] = []
    me = client.me()
    infos.append(f"Front: token accepted (company {me.get('name') or me.get('id') or 'unknown'}).")
    target = FrontTarget(settings, client, state=None)
    try:
        target.start()
        infos.append(f"  inbox {settings.front.inbox!r} is {target.inbox_id}; {len(target.teammates)} teammates "
                     "with an email")
    except OrgMismatchError as exc:
        problems.append(str(exc))
    return infos, problems

"""Deterministic seed data for the emulated Salesforce org.

What RULES.md §3–5 needs the org to hold, so that end-to-end tests exercise
every matching and ownership rule against data shaped like a real org's:

- Users (R-SF-OWNER): the integration user (created by the store), active Users
  whose e-mail equals an Aircall user's (some spelled in another case, some
  created long ago, some within the last day so the "created ≥ 24 h before the
  call" test fails), exactly one inactive one, Aircall users with no Salesforce
  user, and Salesforce users with no Aircall counterpart;
- Accounts, Contacts (most with AccountId), Leads (some converted), Person
  Accounts when the org has them (reference §5 "Person Accounts");
- Cases open and closed, linked to Contacts, and Opportunities open and closed
  with OpportunityContactRole rows, plus account-level open Opportunities
  without a role (the §6 fallback query);
- the given external numbers stored in formats *unlike* Aircall's E.164
  (reference §5 "Storage isn't normalised": ``(617) 610-5413``,
  ``617.610.5413``, ``+1 617 610 5413``, ``001 617 610 5413``,
  ``01 76 11 11 11``, ``0176111111``…), spread over Phone, MobilePhone,
  HomePhone, OtherPhone and AssistantPhone, with duplicates (two Contacts with
  different LastModifiedDate, a Contact and a Lead, a Lead and an Account, a
  converted Lead next to an open one), and a share of numbers left unknown.

:func:`seed_org` returns a :class:`SeedSummary`: which records hold each
number, what R-SF-MATCH-1…3 should pick for it (``expected_match``), the open
Cases/Opportunities per Contact (R-SF-MATCH-6) and the user table, so tests
assert outcomes without re-deriving them.

Same store options, same arguments and the same ``now`` ⇒ the same records
with the same ids.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from aircall_sync.sandbox.salesforce_api import SalesforceStore, format_datetime

__all__ = ["PhoneHolder", "SeedSummary", "number_formats", "seed_org"]

_FIRST = ("Alice", "Bruno", "Chloé", "Daniel", "Emma", "Farid", "Greta", "Hugo", "Inès", "Jonas", "Kate",
          "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Ugo", "Vera", "Wim", "Yara")
_LAST = ("Martin", "Okafor", "Schneider", "Dubois", "García", "Nakamura", "O'Brien", "Rossi", "Kowalski",
         "Silva", "Nguyen", "Johansson", "Haddad", "Moreau", "Fischer", "Novak", "Lopez", "Ivanova", "Brown",
         "Costa", "Meyer", "Tanaka", "Laurent", "Smith")
_COMPANIES = ("Acme Corp", "Globex Ltd", "Initech", "Umbrella SAS", "Stark Industries", "Wayne GmbH",
              "Soylent SA", "Hooli", "Vandelay Imports", "Cyberdyne", "Tyrell Corp", "Wonka BV")
_CONTACT_FIELDS = ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone")
_PERSON_FIELDS = ("PersonMobilePhone", "PersonHomePhone", "PersonOtherPhone")


@dataclass(frozen=True, slots=True)
class PhoneHolder:
    """One record holding an external number."""

    object: str  # Contact, Lead, Account (business) or PersonAccount
    id: str
    field: str
    stored: str  # the value as stored (not E.164)
    last_modified: str
    converted: bool = False
    person_contact_id: str | None = None


@dataclass(slots=True)
class SeedSummary:
    integration_user_id: str
    call_center_id: str
    users: list[dict[str, Any]] = field(default_factory=list)
    user_id_by_email: dict[str, str] = field(default_factory=dict)  # lower-case e-mail -> active user id
    numbers: dict[str, list[PhoneHolder]] = field(default_factory=dict)
    scenarios: dict[str, str] = field(default_factory=dict)
    unknown_numbers: list[str] = field(default_factory=list)
    expected_match: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_cases: dict[str, list[str]] = field(default_factory=dict)  # contact id -> newest first
    closed_cases: dict[str, list[str]] = field(default_factory=dict)
    open_opportunities: dict[str, list[str]] = field(default_factory=dict)  # contact id (via role) -> newest first
    closed_opportunities: dict[str, list[str]] = field(default_factory=dict)
    account_opportunities: dict[str, list[str]] = field(default_factory=dict)  # open, no contact role
    accounts: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=list)
    leads: list[str] = field(default_factory=list)
    person_accounts: list[str] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # record id -> OwnerId


def number_formats(e164: str) -> list[str]:
    """Ways a CRM user might have typed ``e164`` (never the E.164 string itself first)."""
    try:
        n = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return [e164]
    nsn = phonenumbers.national_significant_number(n)
    cc = n.country_code
    intl = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL)
    if cc == 1 and len(nsn) == 10:
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        return [f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"001 {a} {b} {c}", f"{a}-{b}-{c}",
                f"1 ({a}) {b}-{c}", nsn]
    national_digits = "".join(ch for ch in national if ch.isdigit())
    rest = intl.split(" ", 1)[1] if " " in intl else nsn
    return [national, national_digits, intl, f"00{cc} {rest}"]


def seed_org(
    store: SalesforceStore,
    seed: int = 0,
    external_numbers: Sequence[str] = (),
    users: Sequence[Mapping[str, str]] = (),
    *,
    now: datetime | None = None,
    unknown_share: float = 0.35,
) -> SeedSummary:
    """Fill ``store`` with a realistic org around ``external_numbers`` (E.164) and Aircall ``users``."""
    rng = random.Random(f"salesforce-seed:{seed}")
    now = (now or store.now()).astimezone(UTC)
    pa = store.options.person_accounts
    summary = SeedSummary(store.integration_user_id, store.call_center_id)
    integration = store.integration_user_id

    def ago(days_min: float, days_max: float) -> datetime:
        return now - timedelta(seconds=rng.uniform(days_min * 86400, days_max * 86400))

    # --- users (R-SF-OWNER) ---
    owners: list[str] = []
    inactive_done = False
    for i, u in enumerate(users):
        name = u.get("name") or f"Agent {i}"
        email = u.get("email") or f"agent{i}@example.com"
        kind = i % 5
        if kind == 3:
            summary.users.append({"id": None, "name": name, "email": email, "active": False,
                                  "created": None, "case": "no salesforce user"})
            continue
        active = True
        case = "active, created long ago"
        created = ago(300, 700)
        stored_email = email
        if kind == 1:
            stored_email = email.upper()
            case = "active, e-mail in another case"
        elif kind == 2:
            created = now - timedelta(hours=rng.uniform(1, 20))
            case = "active, created within the last day"
        elif kind == 4 and not inactive_done:
            active = False
            inactive_done = True
            case = "inactive"
        uid = store.add_user(name, stored_email, active=active, created=created)
        summary.users.append({"id": uid, "name": name, "email": stored_email, "active": active,
                              "created": format_datetime(created), "case": case})
        if active:
            summary.user_id_by_email[email.lower()] = uid
            owners.append(uid)
    for name, email in (("Sam Manager", "sam.manager@example.com"), ("Riley Support", "riley.support@example.com")):
        created = ago(500, 900)
        uid = store.add_user(name, email, created=created)
        summary.users.append({"id": uid, "name": name, "email": email, "active": True,
                              "created": format_datetime(created), "case": "salesforce only"})
        owners.append(uid)

    def owner() -> str:
        # About a quarter of the records belong to the integration user (R-SF-OWNER reassignment).
        return integration if rng.random() < 0.25 or not owners else rng.choice(owners)

    def stamps() -> tuple[datetime, datetime]:
        created = ago(60, 400)
        modified = created + (now - created - timedelta(days=1)) * rng.random()
        return created, modified

    def person_name() -> tuple[str, str]:
        return rng.choice(_FIRST), rng.choice(_LAST)

    # --- business accounts ---
    n_accounts = max(3, len(external_numbers) // 8)
    for i in range(n_accounts):
        created, modified = stamps()
        name = _COMPANIES[i % len(_COMPANIES)] + ("" if i < len(_COMPANIES) else f" {i // len(_COMPANIES) + 1}")
        oid = owner()
        aid = store.insert("Account", _created=created, _modified=modified, Name=name, OwnerId=oid,
                           Industry=rng.choice(("Technology", "Retail", "Finance", "Healthcare")),
                           BillingCity=rng.choice(("Boston", "Paris", "Berlin", "Madrid", "London")))
        summary.accounts.append(aid)
        summary.owners[aid] = oid
        if i % 3 == 0:
            # An open deal on the account with no contact role: only the §6 fallback query finds it.
            opp = store.insert("Opportunity", _created=created, _modified=modified, Name=f"{name} renewal",
                               AccountId=aid, StageName="Qualification", OwnerId=owner(),
                               CloseDate=(now + timedelta(days=60)).date())
            summary.account_opportunities.setdefault(aid, []).append(opp)

    def fmt(e164: str) -> str:
        return rng.choice(number_formats(e164))

    def add_holder(e164: str, holder: PhoneHolder) -> None:
        summary.numbers.setdefault(e164, []).append(holder)

    def modified_of(rid: str) -> str:
        rec = store.get(rid)
        assert rec is not None
        return str(rec["LastModifiedDate"])

    def contact(e164: str, *, with_related: bool = True, account: str | None = None,
                modified: datetime | None = None) -> str:
        first, last = person_name()
        created, mod = stamps()
        if modified is not None:
            mod = max(modified, created)
        fld = rng.choice(_CONTACT_FIELDS)
        stored = fmt(e164)
        acc = account if account is not None else (rng.choice(summary.accounts) if rng.random() < 0.85 else None)
        oid = owner()
        extra: dict[str, Any] = {}
        if fld != "Phone" and rng.random() < 0.5:
            # A decoy office number on the main line, unrelated to any call.
            extra["Phone"] = "+1 555 0100"
        cid = store.insert("Contact", _created=created, _modified=mod, FirstName=first, LastName=last,
                           AccountId=acc, OwnerId=oid, Email=f"{first}.{last}@example.com".lower().replace("'", ""),
                           **{fld: stored}, **extra)
        summary.contacts.append(cid)
        summary.owners[cid] = oid
        add_holder(e164, PhoneHolder("Contact", cid, fld, stored, modified_of(cid)))
        if with_related:
            related(cid, acc)
        return cid

    def related(cid: str, acc: str | None) -> None:
        r = rng.random()
        if r < 0.45:
            n_open = 2 if rng.random() < 0.3 else 1
            for _ in range(n_open):
                created, mod = stamps()
                case_id = store.insert("Case", _created=created, _modified=mod, ContactId=cid, AccountId=acc,
                                       Subject=rng.choice(("Cannot log in", "Invoice question", "Broken device")),
                                       Origin=rng.choice(("Phone", "Email", "Web")),
                                       Status=rng.choice(("New", "Working", "Escalated")), OwnerId=owner())
                summary.open_cases.setdefault(cid, []).append(case_id)
        if rng.random() < 0.35:
            created, mod = stamps()
            case_id = store.insert("Case", _created=created, _modified=mod, ContactId=cid, AccountId=acc,
                                   Subject="Resolved question", Origin="Phone", Status="Closed", OwnerId=owner())
            summary.closed_cases.setdefault(cid, []).append(case_id)
        if acc and rng.random() < 0.4:
            stage = rng.choice(("Prospecting", "Qualification", "Proposal/Price Quote", "Closed Won", "Closed Lost"))
            created, mod = stamps()
            opp = store.insert("Opportunity", _created=created, _modified=mod, Name=f"Deal {len(summary.contacts)}",
                               AccountId=acc, StageName=stage, CloseDate=(now + timedelta(days=30)).date(),
                               Amount=float(rng.randrange(1000, 50000, 500)), OwnerId=owner())
            store.insert("OpportunityContactRole", OpportunityId=opp, ContactId=cid, Role="Decision Maker",
                         IsPrimary=True, _created=created, _modified=mod)
            bucket = summary.closed_opportunities if stage.startswith("Closed") else summary.open_opportunities
            bucket.setdefault(cid, []).append(opp)

    def lead(e164: str, *, converted: bool = False, modified: datetime | None = None) -> str:
        first, last = person_name()
        created, mod = stamps()
        if modified is not None:
            mod = max(modified, created)
        fld = rng.choice(("Phone", "MobilePhone"))
        stored = fmt(e164)
        oid = owner()
        extra: dict[str, Any] = {}
        if converted:
            target = rng.choice(summary.contacts) if summary.contacts else None
            extra = {"IsConverted": True, "Status": "Closed - Converted", "ConvertedDate": mod.date().isoformat(),
                     "ConvertedContactId": target,
                     "ConvertedAccountId": (store.get(target) or {}).get("AccountId") if target else None}
        lid = store.insert("Lead", _created=created, _modified=mod, FirstName=first, LastName=last,
                           Company=rng.choice(_COMPANIES), OwnerId=oid, **{fld: stored}, **extra)
        summary.leads.append(lid)
        summary.owners[lid] = oid
        add_holder(e164, PhoneHolder("Lead", lid, fld, stored, modified_of(lid), converted=converted))
        return lid

    def account(e164: str) -> str:
        created, mod = stamps()
        stored = fmt(e164)
        oid = owner()
        aid = store.insert("Account", _created=created, _modified=mod, Name=rng.choice(_COMPANIES) + " Branch",
                           Phone=stored, OwnerId=oid)
        summary.accounts.append(aid)
        summary.owners[aid] = oid
        add_holder(e164, PhoneHolder("Account", aid, "Phone", stored, modified_of(aid)))
        return aid

    def person(e164: str) -> str:
        first, last = person_name()
        created, mod = stamps()
        fld = rng.choice(_PERSON_FIELDS)
        stored = fmt(e164)
        oid = owner()
        aid = store.insert("Account", _created=created, _modified=mod, FirstName=first, LastName=last,
                           RecordTypeId=store.record_types["Person Account"], OwnerId=oid, **{fld: stored})
        rec = store.get(aid)
        assert rec is not None
        summary.person_accounts.append(aid)
        summary.owners[aid] = oid
        add_holder(e164, PhoneHolder("PersonAccount", aid, fld, stored, modified_of(aid),
                                     person_contact_id=rec["PersonContactId"]))
        return aid

    scenarios = ["contact", "contact", "contact", "two_contacts", "contact_and_lead", "lead", "lead_and_account",
                 "account", "converted_lead", "converted_and_open_lead"]
    if pa:
        scenarios += ["person_account", "person_account"]
    numbers = list(dict.fromkeys(external_numbers))
    order = list(range(len(numbers)))
    rng.shuffle(order)
    n_unknown = int(round(len(numbers) * unknown_share))
    unknown = set(order[:n_unknown])
    # Every scenario appears at least once when there are enough known numbers.
    plan = [scenarios[i % len(scenarios)] for i in range(len(numbers) - n_unknown)]
    rng.shuffle(plan)
    known = iter(plan)
    for pos, e164 in enumerate(numbers):
        if pos in unknown:
            summary.unknown_numbers.append(e164)
            summary.scenarios[e164] = "unknown"
            continue
        scenario = next(known)
        summary.scenarios[e164] = scenario
        if scenario == "contact":
            contact(e164)
        elif scenario == "two_contacts":
            first = contact(e164, with_related=False)
            newer = _parse_stamp(modified_of(first)) + timedelta(hours=rng.uniform(1, 200))
            contact(e164, modified=min(newer, now - timedelta(hours=1)))
        elif scenario == "contact_and_lead":
            contact(e164)
            lead(e164)
        elif scenario == "lead":
            lead(e164)
        elif scenario == "lead_and_account":
            lead(e164)
            account(e164)
        elif scenario == "account":
            account(e164)
        elif scenario == "converted_lead":
            lead(e164, converted=True)
        elif scenario == "converted_and_open_lead":
            lead(e164, converted=True)
            lead(e164)
        elif scenario == "person_account":
            person(e164)

    # R-SF-MATCH-1..3: Contact, then open Lead, then business Account, then Person Account; newest wins.
    for e164, holders in summary.numbers.items():
        for kind in ("Contact", "Lead", "Account", "PersonAccount"):
            cands = [h for h in holders if h.object == kind and not h.converted]
            if cands:
                best = max(cands, key=lambda h: h.last_modified)
                match: dict[str, Any] = {"object": kind, "id": best.id}
                if kind == "PersonAccount":
                    match["person_contact_id"] = best.person_contact_id
                summary.expected_match[e164] = match
                break
    # Open cases / opportunities newest first, as R-SF-MATCH-6 picks them.
    for table in (summary.open_cases, summary.closed_cases, summary.open_opportunities,
                  summary.closed_opportunities, summary.account_opportunities):
        for cid, ids in table.items():
            ids.sort(key=modified_of, reverse=True)
    return summary


def _parse_stamp(text: str) -> datetime:
    """A stored Salesforce date-time back to a datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)

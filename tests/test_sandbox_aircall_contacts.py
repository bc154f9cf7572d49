"""The emulated Aircall contacts API, over real HTTP on loopback.

Checked against the vendor reference, not the client:
``shared/reference/aircall-api.md`` §12 (Contacts), §3 (paging, the 10k cap),
§4 (the rate limit) and the recorded create
``shared/reference/aircall/recorded/create-contact.json``. Decisions the
reference leaves open are asserted as ``aircall_contacts.AMBIGUITIES`` states
them.

No sleeps: time is a fake clock the test moves (``Clock``), or the live
clock of a :class:`Sandbox`, read before and after. No date is compared with
the wall clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from aircall_sync.sandbox import DEFAULT_API_ID, DEFAULT_API_TOKEN, AircallApp, LoopbackServer, generate
from aircall_sync.sandbox.aircall_api import CAP_ERROR_BODY
from aircall_sync.sandbox.aircall_contacts import (
    AMBIGUITIES,
    ContactBook,
    ContactOptions,
    has_emoji,
    strip_emoji,
)
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

AUTH = (DEFAULT_API_ID, DEFAULT_API_TOKEN)
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 8, tzinfo=UTC)
T0 = 1_790_000_000  # the fake clock's start: after END, only compared with itself
RECORDED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "aircall" / "recorded" / "create-contact.json"
ERROR_KEYS = ["error", "data", "message", "errors", "troubleshoot", "success"]
NOT_FOUND = {"message": "Not Found"}

# create-contact.json (NANGO, recorded live): what was sent, and the keys of the answer in their order.
GARY = {
    "first_name": "Gary",
    "last_name": "Jennings",
    "information": "external_custom_id:87123",
    "phone_numbers": [{"label": "Work", "value": "+19001112222"}],
    "emails": [{"label": "Office", "value": "gary.jennings@acme.com"}],
}
RECORDED_KEYS = ["id", "created_at", "updated_at", "first_name", "last_name", "information", "company_name",
                 "is_shared", "direct_link", "phone_numbers", "emails"]


class Clock:
    """Time the test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Emulator:
    def __init__(self, *, calls: int = 150, seed: int = 7, options: ContactOptions | None = None,
                 requests_per_minute: int | None = None, rate_window_seconds: float = 60.0) -> None:
        self.clock = Clock()
        self.store = generate(calls=calls, seed=seed, start=START, end=END)
        self.book = ContactBook(self.store.world, clock=self.clock, options=options)
        app = AircallApp(self.store, contacts=self.book, clock=self.clock,
                         requests_per_minute=requests_per_minute, rate_window_seconds=rate_window_seconds)
        self.server = LoopbackServer(app, api="aircall").start()
        self.book.base_url = self.server.url
        self.http = httpx.Client(base_url=self.server.url, auth=AUTH, timeout=10)

    def close(self) -> None:
        self.http.close()
        self.server.stop()

    def all_contacts(self, path: str = "/v1/contacts", **params: Any) -> list[dict]:
        out: list[dict] = []
        r = self.http.get(path, params={"per_page": 50, **params})
        while True:
            assert r.status_code == 200, r.text
            out += r.json()["contacts"]
            nxt = r.json()["meta"]["next_page_link"]
            if nxt is None:
                return out
            r = self.http.get(nxt)

    def calls(self) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            body = self.http.get("/v1/calls", params={"per_page": 50, "page": page, "fetch_contact": "true"}).json()
            out += body["calls"]
            if body["meta"]["next_page_link"] is None:
                return out
            page += 1


@pytest.fixture()
def emu() -> Iterator[Emulator]:
    e = Emulator()
    yield e
    e.close()
    assert e.server.errors == []


def _bad(r: httpx.Response, *words: str) -> None:
    """A 400 in the observed error shape (aircall-api.md §1) whose text names the problem."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert list(body) == ERROR_KEYS
    assert body["error"] == "Bad Request" and body["message"] == "BAD_REQUEST" and body["success"] is False
    for w in words:
        assert w in body["errors"], body["errors"]


def _contact_with(**changes: Any) -> dict:
    return {**GARY, **changes}


# -- the store starts with the calls' contacts --------------------------------------------------------


def test_every_call_contact_resolves_to_the_same_contact(emu):
    calls = emu.calls()
    embedded = {c["contact"]["id"]: c["contact"] for c in calls if c["contact"]}
    assert len(embedded) >= 5
    for cid, contact in embedded.items():
        r = emu.http.get(f"/v1/contacts/{cid}")
        assert r.status_code == 200
        assert r.json() == {"contact": contact}  # same id space, same data, same keys
    listed = {c["id"]: c for c in emu.all_contacts()}
    assert set(embedded) <= set(listed)
    # Contacts of callers of the pool that did not call in the range are in the phone book too.
    assert len(listed) == len(emu.book) >= len(embedded)
    assert all(c["is_shared"] is True for c in listed.values())
    # aircall-api.md §12: every live contact number is unspaced E.164.
    assert all(re.fullmatch(r"\+[1-9]\d{6,14}", p["value"]) for c in listed.values() for p in c["phone_numbers"])


def test_a_callers_contact_is_found_by_the_calls_number(emu):
    call = next(c for c in emu.calls() if c["contact"])
    e164 = "+" + "".join(ch for ch in call["raw_digits"] if ch.isdigit())
    found = emu.all_contacts("/v1/contacts/search", phone_number=e164)
    assert call["contact"]["id"] in {c["id"] for c in found}


def test_unknown_contact_is_404_not_found(emu):
    for path in ("/v1/contacts/1", "/v1/contacts/120000000", "/v1/contacts/abc", "/v1/contacts/999999999"):
        r = emu.http.get(path)
        assert (r.status_code, r.json()) == (404, NOT_FOUND), path
    assert emu.http.post("/v1/contacts/1", json={"first_name": "x"}).json() == NOT_FOUND
    assert emu.http.delete("/v1/contacts/1").status_code == 404


# -- create ---------------------------------------------------------------------------------------------


def test_create_answers_201_in_the_recorded_shape(emu):
    r = emu.http.post("/v1/contacts", json=GARY)
    assert r.status_code == 201  # the docs; NANGO recorded 200 through a proxy (AMBIGUITIES)
    contact = r.json()["contact"]
    assert list(r.json()) == ["contact"]
    assert list(contact) == RECORDED_KEYS
    if RECORDED.exists():
        recorded = json.loads(RECORDED.read_text())["api"]["post"]["/v1/contacts"]
        assert recorded["request"]["data"] == GARY
        assert list(contact) == list(recorded["response"]["contact"])
        assert [list(p) for p in contact["phone_numbers"]] == [list(p) for p in
                                                               recorded["response"]["contact"]["phone_numbers"]]
    assert contact["created_at"] == contact["updated_at"] == T0
    assert contact["company_name"] is None and contact["is_shared"] is True
    assert contact["direct_link"] == f"{emu.server.url}/v1/contacts/{contact['id']}"
    # Values come back exactly as sent, each number and email with its own id.
    assert [(p["label"], p["value"]) for p in contact["phone_numbers"]] == [("Work", "+19001112222")]
    assert [(e["label"], e["value"]) for e in contact["emails"]] == [("Office", "gary.jennings@acme.com")]
    ids = [contact["id"], contact["phone_numbers"][0]["id"], contact["emails"][0]["id"]]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 3
    assert emu.http.get(f"/v1/contacts/{contact['id']}").json() == {"contact": contact}
    assert [(c.op, c.contact_id) for c in emu.book.changes()] == [("create", contact["id"])]


def test_posting_twice_makes_two_contacts(emu):
    before = len(emu.book)
    a = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    b = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    assert a["id"] != b["id"]
    assert len(emu.book) == before + 2
    found = emu.all_contacts("/v1/contacts/search", phone_number="+19001112222")
    assert sorted(c["id"] for c in found) == sorted([a["id"], b["id"]])


@pytest.mark.parametrize(("body", "words"), [
    ({k: v for k, v in GARY.items() if k != "phone_numbers"}, ("phone_numbers", "can't be blank")),
    (_contact_with(phone_numbers=[]), ("phone_numbers", "can't be blank")),
    (_contact_with(phone_numbers=None), ("phone_numbers", "can't be blank")),
    (_contact_with(phone_numbers="+19001112222"), ("phone_numbers",)),
    (_contact_with(phone_numbers=["+19001112222"]), ("phone_numbers[0]",)),
    (_contact_with(phone_numbers=[{"value": "+19001112222"}]), ("phone_numbers[0].label", "can't be blank")),
    (_contact_with(phone_numbers=[{"label": "Work"}]), ("phone_numbers[0].value", "can't be blank")),
    (_contact_with(phone_numbers=[{"label": "Work", "value": "  "}]), ("phone_numbers[0].value", "can't be blank")),
    (_contact_with(phone_numbers=[{"label": "Work", "value": "+19001112222"}] * 21),
     ("phone_numbers", "maximum is 20")),
    (_contact_with(emails=[{"label": "W", "value": f"a{i}@b.example"} for i in range(21)]),
     ("emails", "maximum is 20")),
    (_contact_with(emails=[{"label": "Office"}]), ("emails[0].value", "can't be blank")),
    (_contact_with(emails=[{"label": "Office", "value": "not-an-address"}]), ("emails[0].value", "email")),
    (_contact_with(first_name=12), ("first_name", "string")),
    (_contact_with(information="x" * 30_001), ("information", "30000")),
    (_contact_with(first_name="Gary 🎉"), ("first_name", "emoji")),
    (_contact_with(company_name="Acme 🚀"), ("company_name", "emoji")),
    (_contact_with(phone_numbers=[{"label": "Work ☎️", "value": "+19001112222"}]),
     ("phone_numbers[0].label", "emoji")),
    ([GARY], ("JSON object",)),
], ids=lambda v: v[0] if isinstance(v, tuple) and v and isinstance(v[0], str) else None)
def test_create_refuses_what_the_reference_refuses(emu, body, words):
    r = emu.http.post("/v1/contacts", json=body)
    _bad(r, *words)
    assert emu.book.changes() == []


@pytest.mark.parametrize("value", [
    "+1 812-641-5139",   # spaced: the reference leaves normalizing UNCONFIRMED; the emulator refuses
    "+1-812-641-5139",
    "18126415139",       # no '+'
    "0612345678",        # national
    "+33 6 12 34 56 78",
    "+1555",             # too short to be possible
    "+012345678",        # no country starts with 0
    "+1234567890123456",  # 16 digits
    "tel:+18126415139",
])
def test_create_refuses_numbers_that_are_not_e164(emu, value):
    r = emu.http.post("/v1/contacts", json=_contact_with(phone_numbers=[{"label": "Work", "value": value}]))
    _bad(r, "phone_numbers[0].value", "E.164")


def test_create_accepts_what_the_reference_allows(emu):
    # +19001112222 is "possible" but not "valid" for libphonenumber: Aircall saved it (the recording).
    twenty = [{"label": f"L{i}", "value": f"+3361234{i:04d}"} for i in range(20)]
    emails = [{"label": "W", "value": f"a{i}@b.example"} for i in range(20)]
    r = emu.http.post("/v1/contacts", json={"phone_numbers": twenty, "emails": emails, "is_shared": False, "unknown": 1})
    assert r.status_code == 201, r.text
    c = r.json()["contact"]
    assert len(c["phone_numbers"]) == 20 and len(c["emails"]) == 20
    assert c["is_shared"] is True  # not an input (§12)
    assert (c["first_name"], c["last_name"], c["company_name"], c["information"]) == (None, None, None, None)
    assert "unknown" not in c
    # Accented letters, ™ and the like are not emojis.
    r = emu.http.post("/v1/contacts", json=_contact_with(first_name="Zoé", company_name="Acme™ & Co ©"))
    assert r.status_code == 201, r.text


def test_emojis_stripped_when_the_option_says_so():
    e = Emulator(options=ContactOptions(emoji="strip"))
    try:
        phones = [{"label": "Work ☎️", "value": "+19001112222"}]
        r = e.http.post("/v1/contacts", json=_contact_with(first_name="Gary 🎉", company_name="🚀 Acme",
                                                           phone_numbers=phones))
        assert r.status_code == 201, r.text
        c = r.json()["contact"]
        assert (c["first_name"], c["company_name"], c["phone_numbers"][0]["label"]) == ("Gary", "Acme", "Work")
        # A value that is nothing but emojis is blank once stripped.
        _bad(e.http.post(f"/v1/contacts/{c['id']}", json={"last_name": "👍🏽"}), "last_name", "can't be blank")
    finally:
        e.close()


def test_emoji_helpers():
    for text in ("🎉", "👍🏽", "🇫🇷", "❤️", "☎", "✅", "⭐", "1️⃣", "👨\u200d👩\u200d👧"):
        assert has_emoji(text), text
    for text in ("Zoé Brown", "Acme™", "© 2026", "+33 6 12", "O'Neil-Ñúñez", "北京", "Ελληνικά"):
        assert not has_emoji(text), text
    assert strip_emoji("Gary 🎉 Jennings") == "Gary Jennings"
    assert strip_emoji("👨\u200d👩\u200d👧 Family") == "Family"


def test_bodies_that_are_not_json(emu):
    r = emu.http.post("/v1/contacts", content=b"{not json", headers={"Content-Type": "application/json"})
    _bad(r, "JSON")
    _bad(emu.http.post("/v1/contacts"), "phone_numbers", "can't be blank")  # an empty body


# -- search ---------------------------------------------------------------------------------------------


def test_search_by_e164_needs_the_plus_encoded(emu):
    cid = emu.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
    r = emu.http.get("/v1/contacts/search", params={"phone_number": "+19001112222"})
    assert "phone_number=%2B19001112222" in str(r.request.url)
    assert [c["id"] for c in r.json()["contacts"]] == [cid]
    # A raw '+' is a space once decoded: nothing matches (200, empty).
    r = emu.http.get(f"{emu.server.url}/v1/contacts/search?phone_number=+19001112222")
    assert "phone_number=+19001112222" in str(r.request.url)
    assert r.status_code == 200 and r.json()["contacts"] == [] and r.json()["meta"]["total"] == 0
    for other in ("19001112222", "+1 900-111-2222", "+19001112223"):
        assert emu.http.get("/v1/contacts/search", params={"phone_number": other}).json()["contacts"] == [], other


def test_search_by_email_and_both(emu):
    cid = emu.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
    assert [c["id"] for c in emu.all_contacts("/v1/contacts/search", email="Gary.Jennings@ACME.com")] == [cid]
    both = emu.all_contacts("/v1/contacts/search", email="gary.jennings@acme.com", phone_number="+19001112222")
    assert [c["id"] for c in both] == [cid]
    assert emu.all_contacts("/v1/contacts/search", email="gary.jennings@acme.com", phone_number="+33612345678") == []
    # No filter (unknown parameters are ignored, NANGO query=…): every contact.
    assert len(emu.all_contacts("/v1/contacts/search", query="Gary")) == len(emu.book)


def test_search_may_lag_a_create_when_seeded_so():
    e = Emulator(options=ContactOptions(search_lag_s=30))
    try:
        cid = e.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
        assert e.http.get(f"/v1/contacts/{cid}").status_code == 200
        assert cid in {c["id"] for c in e.all_contacts()}
        search = {"phone_number": "+19001112222"}
        assert e.all_contacts("/v1/contacts/search", **search) == []
        e.clock.advance(29)
        assert e.all_contacts("/v1/contacts/search", **search) == []
        e.clock.advance(1)
        assert [c["id"] for c in e.all_contacts("/v1/contacts/search", **search)] == [cid]
    finally:
        e.close()


def test_search_lag_jitter_comes_from_the_seed():
    def lags(seed: int) -> list[float]:
        store = generate(calls=40, seed=seed, start=START, end=END)
        book = ContactBook(store.world, clock=lambda: T0, options=ContactOptions(search_lag_jitter_s=100))
        for _ in range(5):
            book.create(GARY)
        return [book._records[c.contact_id].searchable_at - T0 for c in book.changes()]
    assert lags(3) == lags(3)
    assert lags(3) != lags(4)
    assert all(0 <= x <= 100 for x in lags(3))


# -- lists: paging, order, windows, the cap -------------------------------------------------------------


def test_list_pages_like_every_aircall_list(emu):
    everything = emu.all_contacts()
    total = len(everything)
    assert total > 10
    r = emu.http.get("/v1/contacts", params={"per_page": 4, "page": 2, "order": "asc"})
    meta = r.json()["meta"]
    assert meta["count"] == 4 and meta["total"] == total and meta["current_page"] == 2 and meta["per_page"] == 4
    nxt, prev = urlsplit(meta["next_page_link"]), urlsplit(meta["previous_page_link"])
    assert nxt.path == prev.path == "/v1/contacts"
    assert parse_qs(nxt.query) == {"page": ["3"], "per_page": ["4"], "order": ["asc"]}
    assert [c["id"] for c in r.json()["contacts"]] == [c["id"] for c in everything[4:8]]
    # Default order: created_at ascending, ties by id.
    keys = [(c["created_at"], c["id"]) for c in everything]
    assert keys == sorted(keys)
    last = emu.http.get("/v1/contacts", params={"per_page": 4, "page": -(-total // 4)}).json()["meta"]
    assert last["next_page_link"] is None
    # per_page above 50 is clamped, silently (§3).
    assert emu.http.get("/v1/contacts", params={"per_page": 500}).json()["meta"]["per_page"] == 50


def test_list_order_and_order_by(emu):
    emu.http.post(f"/v1/contacts/{emu.all_contacts()[0]['id']}", json={"first_name": "Touched"})  # updated_at = T0
    asc = emu.all_contacts()
    desc = emu.all_contacts(order="desc")
    assert [c["id"] for c in desc] == [c["id"] for c in reversed(asc)]
    by_update = emu.all_contacts(order_by="updated_at")
    keys = [(c["updated_at"], c["id"]) for c in by_update]
    assert keys == sorted(keys) and by_update[-1]["first_name"] == "Touched"
    # An unknown order_by is ignored: created_at.
    assert [c["id"] for c in emu.all_contacts(order_by="name")] == [c["id"] for c in asc]


def test_from_and_to_are_both_inclusive_on_created_at(emu):
    everything = emu.all_contacts()
    pick = everything[len(everything) // 2]
    t = pick["created_at"]
    same = [c["id"] for c in everything if c["created_at"] == t]
    assert [c["id"] for c in emu.all_contacts(**{"from": t, "to": t})] == same
    assert pick["id"] not in {c["id"] for c in emu.all_contacts(**{"from": t + 1})}
    assert pick["id"] not in {c["id"] for c in emu.all_contacts(to=t - 1)}
    assert [c["id"] for c in emu.all_contacts(**{"from": t})] == [c["id"] for c in everything if c["created_at"] >= t]
    # The window is on created_at even when sorting by updated_at.
    assert {c["id"] for c in emu.all_contacts(**{"from": t}, order_by="updated_at")} == \
        {c["id"] for c in everything if c["created_at"] >= t}
    _bad(emu.http.get("/v1/contacts", params={"from": "yesterday"}), "from")


def test_the_10k_cap_applies_to_contacts(emu):
    for path in ("/v1/contacts", "/v1/contacts/search"):
        r = emu.http.get(path, params={"per_page": 50, "page": 201})
        assert (r.status_code, r.json()) == (400, CAP_ERROR_BODY)
        r = emu.http.get(path, params={"per_page": 50, "page": 200})
        assert r.status_code == 200 and r.json()["contacts"] == []
        assert r.json()["meta"]["next_page_link"] is None
    # The position counts, with per_page after clamping: 10001 × 1 is over, whatever the total.
    assert emu.http.get("/v1/contacts", params={"per_page": 1, "page": 10_001}).status_code == 400
    assert emu.http.get("/v1/contacts", params={"per_page": 100, "page": 200}).status_code == 200


# -- update, delete ------------------------------------------------------------------------------------


def test_update_changes_the_four_scalar_fields_only(emu):
    created = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    emu.clock.advance(60)
    r = emu.http.post(f"/v1/contacts/{created['id']}", json={
        "first_name": "Garry", "last_name": "Jennings-Smith", "company_name": "Acme", "information": "sf:003",
        # Re-sent numbers and emails (as NANGO did) and new ones are ignored: other endpoints change them.
        "phone_numbers": [*created["phone_numbers"], {"label": "Mobile", "value": "+33612345678"}],
        "emails": [], "is_shared": False,
    })
    assert r.status_code == 200
    c = r.json()["contact"]
    assert (c["first_name"], c["last_name"], c["company_name"], c["information"]) == \
        ("Garry", "Jennings-Smith", "Acme", "sf:003")
    assert c["phone_numbers"] == created["phone_numbers"] and c["emails"] == created["emails"]
    assert c["is_shared"] is True
    assert (c["created_at"], c["updated_at"]) == (T0, T0 + 60)
    assert emu.http.get(f"/v1/contacts/{c['id']}").json() == {"contact": c}
    change = emu.book.changes()[-1]
    assert (change.op, change.changed, change.before) == (
        "update", {"first_name": "Garry", "last_name": "Jennings-Smith", "company_name": "Acme",
                   "information": "sf:003"},
        {"first_name": "Gary", "last_name": "Jennings", "company_name": None, "information": "external_custom_id:87123"})


def test_update_that_changes_nothing_keeps_updated_at(emu):
    created = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    emu.clock.advance(60)
    r = emu.http.post(f"/v1/contacts/{created['id']}", json={"first_name": "Gary", "phone_numbers": []})
    assert r.json()["contact"] == created
    assert [c.op for c in emu.book.changes()] == ["create"]


def test_put_routes_to_the_same_update(emu):
    cid = emu.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
    r = emu.http.put(f"/v1/contacts/{cid}", json={"last_name": "Put"})
    assert r.status_code == 200 and r.json()["contact"]["last_name"] == "Put"


@pytest.mark.parametrize("blank", [None, "", "   "])
@pytest.mark.parametrize("name", ["first_name", "last_name", "company_name", "information"])
def test_update_cannot_blank_a_field(emu, name, blank):
    cid = emu.http.post("/v1/contacts", json=_contact_with(company_name="Acme")).json()["contact"]["id"]
    _bad(emu.http.post(f"/v1/contacts/{cid}", json={name: blank}), name, "can't be blank")
    _bad(emu.http.post(f"/v1/contacts/{cid}", json={name: "🎉 x"}), name, "emoji")
    assert [c.op for c in emu.book.changes()] == ["create"]


def test_update_of_an_unknown_contact_is_404_before_any_body_check(emu):
    r = emu.http.post("/v1/contacts/42", content=b"not json")
    assert (r.status_code, r.json()) == (404, NOT_FOUND)


def test_delete_leaves_no_tombstone(emu):
    cid = emu.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
    r = emu.http.delete(f"/v1/contacts/{cid}")
    assert r.status_code == 204 and r.content == b""
    assert (emu.http.get(f"/v1/contacts/{cid}").status_code, emu.http.get(f"/v1/contacts/{cid}").json()) == \
        (404, NOT_FOUND)
    assert cid not in {c["id"] for c in emu.all_contacts()}
    assert emu.all_contacts("/v1/contacts/search", phone_number="+19001112222") == []
    assert emu.http.delete(f"/v1/contacts/{cid}").status_code == 404
    assert emu.http.post(f"/v1/contacts/{cid}/phone_details", json={"label": "W", "value": "+33612345678"}) \
        .status_code == 404


def test_other_methods_and_paths(emu):
    cid = emu.all_contacts()[0]["id"]
    r = emu.http.patch(f"/v1/contacts/{cid}", json={"first_name": "x"})
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "POST", "PUT", "DELETE"}
    # EST: …/emails is a 404; the detail endpoints are …/email_details.
    r = emu.http.post(f"/v1/contacts/{cid}/emails", json={"label": "W", "value": "a@b.example"})
    assert r.status_code == 404
    assert emu.http.post(f"/v1/contacts/{cid}/phone_numbers", json={}).status_code == 404
    assert emu.http.delete("/v1/contacts").status_code == 405


# -- phone and email details ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "envelope", "key", "value", "value2", "bad"), [
    ("phone_details", "phone_detail", "phone_numbers", "+33612345678", "+447700900123", "06 12 34 56 78"),
    ("email_details", "email_detail", "emails", "g@acme.example", "gary@acme.example", "nope"),
])
def test_detail_endpoints(emu, kind, envelope, key, value, value2, bad):
    contact = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    cid = contact["id"]
    emu.clock.advance(5)
    r = emu.http.post(f"/v1/contacts/{cid}/{kind}", json={"label": "Mobile", "value": value})
    assert r.status_code == 201
    detail = r.json()[envelope]
    assert list(r.json()) == [envelope] and list(detail) == ["id", "label", "value"]
    assert (detail["label"], detail["value"]) == ("Mobile", value)
    got = emu.http.get(f"/v1/contacts/{cid}").json()["contact"]
    assert {"value": value, "id": detail["id"], "label": "Mobile"} in got[key]
    assert got["updated_at"] == T0 + 5 and len(got[key]) == 2

    emu.clock.advance(5)
    r = emu.http.put(f"/v1/contacts/{cid}/{kind}/{detail['id']}", json={"value": value2})
    assert r.status_code == 200 and r.json() == {envelope: {"id": detail["id"], "label": "Mobile", "value": value2}}
    r = emu.http.put(f"/v1/contacts/{cid}/{kind}/{detail['id']}", json={"label": "Home"})
    assert r.json()[envelope] == {"id": detail["id"], "label": "Home", "value": value2}
    _bad(emu.http.put(f"/v1/contacts/{cid}/{kind}/{detail['id']}", json={}), "label or value")
    _bad(emu.http.put(f"/v1/contacts/{cid}/{kind}/{detail['id']}", json={"value": bad}), "value")
    _bad(emu.http.post(f"/v1/contacts/{cid}/{kind}", json={"value": value}), "label", "can't be blank")
    _bad(emu.http.post(f"/v1/contacts/{cid}/{kind}", json={"label": "🎉", "value": value}), "label", "emoji")
    # A detail of another contact, or an unknown one, is not found.
    other = emu.http.post("/v1/contacts", json=GARY).json()["contact"]
    other_detail = other[key][0]["id"]
    for did in (other_detail, 1, "abc"):
        r = emu.http.put(f"/v1/contacts/{cid}/{kind}/{did}", json={"label": "x"})
        assert (r.status_code, r.json()) == (404, NOT_FOUND)
        assert emu.http.delete(f"/v1/contacts/{cid}/{kind}/{did}").status_code == 404

    r = emu.http.delete(f"/v1/contacts/{cid}/{kind}/{detail['id']}")
    assert r.status_code == 204 and r.content == b""
    assert [d["id"] for d in emu.http.get(f"/v1/contacts/{cid}").json()["contact"][key]] == [contact[key][0]["id"]]
    # The last one may go too: contacts without numbers exist (recorded contact.created webhook).
    assert emu.http.delete(f"/v1/contacts/{cid}/{kind}/{contact[key][0]['id']}").status_code == 204
    assert emu.http.get(f"/v1/contacts/{cid}").json()["contact"][key] == []
    ops = [c.op for c in emu.book.changes() if c.contact_id == cid]
    assert ops == ["create", f"{envelope}.create", f"{envelope}.update", f"{envelope}.update",
                   f"{envelope}.delete", f"{envelope}.delete"]


def test_a_21st_number_through_phone_details_is_refused(emu):
    twenty = [{"label": "W", "value": f"+3361234{i:04d}"} for i in range(20)]
    cid = emu.http.post("/v1/contacts", json={"phone_numbers": twenty}).json()["contact"]["id"]
    _bad(emu.http.post(f"/v1/contacts/{cid}/phone_details", json={"label": "W", "value": "+33612349999"}),
         "phone_numbers", "maximum is 20")


def test_a_new_number_is_searchable(emu):
    cid = emu.http.post("/v1/contacts", json=GARY).json()["contact"]["id"]
    emu.http.post(f"/v1/contacts/{cid}/phone_details", json={"label": "Mobile", "value": "+33612345678"})
    assert [c["id"] for c in emu.all_contacts("/v1/contacts/search", phone_number="+33612345678")] == [cid]


# -- calls show contacts as they are --------------------------------------------------------------------


def test_calls_show_a_contact_as_the_api_left_it(emu):
    call = next(c for c in emu.calls() if c["contact"])
    cid = call["contact"]["id"]
    phone_id = call["contact"]["phone_numbers"][0]["id"]
    emu.clock.advance(10)
    updated = emu.http.post(f"/v1/contacts/{cid}", json={"company_name": "Renamed Ltd"}).json()["contact"]
    # A seeded contact keeps its keys (description included) once changed.
    assert list(updated) == list(call["contact"]) and updated["updated_at"] == T0 + 10
    emu.http.put(f"/v1/contacts/{cid}/phone_details/{phone_id}", json={"label": "Mobile"})
    again = emu.http.get(f"/v1/calls/{call['id']}", params={"fetch_contact": "true"}).json()["call"]["contact"]
    assert again == emu.http.get(f"/v1/contacts/{cid}").json()["contact"]
    assert again["company_name"] == "Renamed Ltd" and again["phone_numbers"][0]["label"] == "Mobile"
    # Without fetch_contact the contact stays null (§12).
    assert emu.http.get(f"/v1/calls/{call['id']}").json()["call"]["contact"] is None
    emu.http.delete(f"/v1/contacts/{cid}")
    assert emu.http.get(f"/v1/calls/{call['id']}", params={"fetch_contact": "true"}).json()["call"]["contact"] is None


def test_a_created_contact_shows_on_later_calls_of_its_number_only(emu):
    store, world = emu.store, emu.store.world
    calls = emu.calls()
    # The most frequent caller without a seeded contact.
    counts: dict[int, int] = {}
    for k in range(world.pool_size):
        if not world.has_contact(k):
            counts[k] = sum(1 for c in calls if "+" + world.ext(k).digits ==
                            "+" + "".join(ch for ch in c["raw_digits"] if ch.isdigit()))
    code = max(counts, key=counts.__getitem__)
    number = "+" + world.ext(code).digits
    assert counts[code] > 0
    cid = emu.http.post("/v1/contacts", json=_contact_with(phone_numbers=[{"label": "Work", "value": number}])) \
        .json()["contact"]["id"]
    earlier = [c for c in emu.calls() if "".join(ch for ch in c["raw_digits"] if ch.isdigit()) == number[1:]]
    assert earlier and all(c["contact"] is None for c in earlier)
    store.add_generated(400, T0 + 60, T0 + 7 * 86400, seed=99)
    later = [c for c in emu.calls() if c["started_at"] > T0
             and "".join(ch for ch in c["raw_digits"] if ch.isdigit()) == number[1:]]
    assert later and all(c["contact"] and c["contact"]["id"] == cid for c in later)


# -- pacing and counting ----------------------------------------------------------------------------------


def test_contact_requests_share_the_rate_limit_and_are_logged():
    e = Emulator(requests_per_minute=4, rate_window_seconds=3600)
    try:
        assert e.http.get("/v1/calls").status_code == 200
        assert e.http.get("/v1/contacts").status_code == 200
        assert e.http.post("/v1/contacts", json=GARY).status_code == 201
        assert e.http.get("/v1/contacts/search", params={"phone_number": "+19001112222"}).status_code == 200
        r = e.http.post("/v1/contacts", json=GARY)
        assert r.status_code == 429
        assert all(h in r.headers for h in ("X-AircallApi-Limit", "X-AircallApi-Remaining", "X-AircallApi-Reset"))
        assert len(e.book.changes()) == 1  # the refused create made nothing
        s = e.server
        assert s.count(api="aircall", path_prefix="/v1/contacts") == 4
        assert s.count(path_prefix="/v1/contacts", method="POST") == 2
        assert s.count(path_prefix="/v1/contacts", method="POST", status=201) == 1
        assert s.count(path_prefix="/v1/contacts/search", method="GET") == 1
        assert s.count(path_prefix="/v1/calls") == 1
        assert s.count(status=429) == 1
    finally:
        e.close()


# -- determinism ------------------------------------------------------------------------------------------


def _script(e: Emulator) -> list[Any]:
    out: list[Any] = []
    seeded = e.all_contacts()[3]["id"]
    for body in (GARY, _contact_with(first_name="Ann", phone_numbers=[{"label": "W", "value": "+33612345678"}])):
        out.append(e.http.post("/v1/contacts", json=body).json())
        e.clock.advance(7)
    cid = out[0]["contact"]["id"]
    out.append(e.http.post(f"/v1/contacts/{seeded}", json={"last_name": "Changed"}).json())
    out.append(e.http.post(f"/v1/contacts/{cid}/phone_details", json={"label": "M", "value": "+447700900123"}).json())
    out.append(e.http.post(f"/v1/contacts/{cid}/email_details", json={"label": "M", "value": "x@y.example"}).json())
    out.append(e.all_contacts(order_by="updated_at", order="desc"))
    return json.loads(json.dumps(out).replace(e.server.url, "BASE"))


def test_same_seed_same_requests_same_answers():
    runs = []
    for seed in (7, 7, 8):
        e = Emulator(seed=seed)
        try:
            runs.append(_script(e))
        finally:
            e.close()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# -- the stack: the store for tests -------------------------------------------------------------------------


@pytest.fixture()
def box() -> Iterator[Sandbox]:
    b = Sandbox(SandboxOptions(calls=120, seed=11, days=3, salesforce=False, front=False)).start()
    yield b
    b.stop()
    assert b.aircall_server.errors == []


def test_stack_exposes_the_contacts_store(box):
    book = box.aircall_contacts
    assert book is not None and box.aircall_server is not None
    http = httpx.Client(base_url=box.aircall_server.url, auth=AUTH, timeout=10)
    try:
        seeded = book.all()
        assert seeded and seeded[:50] == http.get("/v1/contacts", params={"per_page": 50}).json()["contacts"]
        # By hand, as an agent in the app: no request, emojis stripped, the number saved in E.164.
        t_before = box.live_clock.now()
        made = book.add(first_name="Léa 🌸", last_name="Martin", phone_numbers=["+33 6 12 34 56 78"],
                        emails=[{"label": "Home", "value": "lea@example.org"}])
        t_after = box.live_clock.now()
        assert box.aircall_server.count() == 1
        assert made["first_name"] == "Léa" and made["phone_numbers"][0]["value"] == "+33612345678"
        assert int(t_before) <= made["created_at"] <= t_after
        assert made["direct_link"] == f"{box.aircall_server.url}/v1/contacts/{made['id']}"
        assert [c["id"] for c in book.find_by_number("+33 6 12 34 56 78")] == [made["id"]]
        assert [c["id"] for c in book.find_by_number("+33612345678")] == [made["id"]]
        assert [c["id"] for c in book.find_by_email("LEA@example.org")] == [made["id"]]
        assert book.changes() == [] and [c.op for c in book.changes("app")] == ["create"]
        # The API sees it like any other contact.
        found = http.get("/v1/contacts/search", params={"phone_number": "+33612345678"}).json()["contacts"]
        assert found == [made]
        # What the API changed is readable without HTTP.
        http.post(f"/v1/contacts/{made['id']}", json={"company_name": "Acme"})
        [change] = book.changes()
        assert (change.op, change.contact_id, change.changed, change.before) == \
            ("update", made["id"], {"company_name": "Acme"}, {"company_name": None})
        assert book.get(made["id"])["company_name"] == "Acme"
        # An agent's edit by hand is an "app" change.
        book.edit(made["id"], last_name="Martin-Dupont")
        assert book.changes("app")[-1].changed == {"last_name": "Martin-Dupont"}
        # A private contact is invisible to the API.
        private = book.add(first_name="Own", phone_numbers=["+447700900123"], shared=False)
        assert http.get(f"/v1/contacts/{private['id']}").status_code == 404
        assert http.get("/v1/contacts/search", params={"phone_number": "+447700900123"}).json()["contacts"] == []
        assert private["id"] not in {c["id"] for c in book.all()}
        assert private["id"] in {c["id"] for c in book.all(private=True)}
        with pytest.raises(ValueError):
            book.add(first_name="Bad", phone_numbers=["+1 555"])
    finally:
        http.close()


def test_stack_contact_options_reach_the_api():
    b = Sandbox(SandboxOptions(calls=30, seed=2, days=1, salesforce=False, front=False,
                               aircall_contacts=ContactOptions(emoji="strip", search_lag_s=600))).start()
    try:
        http = httpx.Client(base_url=b.aircall_server.url, auth=AUTH, timeout=10)
        c = http.post("/v1/contacts", json=_contact_with(first_name="Gary 🎉")).json()["contact"]
        assert c["first_name"] == "Gary"
        search = {"phone_number": "+19001112222"}
        assert http.get("/v1/contacts/search", params=search).json()["contacts"] == []
        b.live_clock.advance(600)
        assert [x["id"] for x in http.get("/v1/contacts/search", params=search).json()["contacts"]] == [c["id"]]
        http.close()
    finally:
        b.stop()


def test_every_decision_is_written_down():
    assert len(AMBIGUITIES) >= 10 and all(isinstance(a, str) and a.strip() for a in AMBIGUITIES)
    text = " ".join(AMBIGUITIES)
    for topic in ("E.164", "Emoji", "201", "PUT", "%2B", "Search lag", "can't be blank", "description"):
        assert topic in text, topic

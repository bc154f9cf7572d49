"""The Salesforce emulator over real HTTPS (reference salesforce-api.md §1–9, DESIGN §7).

Every test talks to a running sandbox through httpx (or simple-salesforce)
with the generated CA as the only trust anchor, then reads the store.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from aircall_sync.sandbox import soql
from aircall_sync.sandbox.salesforce_api import (
    AuthConfig,
    OrgOptions,
    SalesforceFaults,
    SalesforceSandbox,
    SalesforceStore,
    start_salesforce_sandbox,
)
from aircall_sync.sandbox.salesforce_seed import number_formats, seed_org
from aircall_sync.sandbox.server import Faults
from aircall_sync.sandbox.tls import generate_jwt_keypair

V = "/services/data/v63.0"
NUMBERS = [
    "+16176105413", "+33176111111", "+14155550123", "+442071234567", "+16175550000", "+33612345678",
    "+4930123456", "+16465550199", "+12125550100", "+33145678901", "+16505550111", "+16175550122",
    "+16175550133", "+16175550144", "+16175550155", "+16175550166", "+16175550177", "+16175550188",
    "+16175550199", "+16175550211", "+16175550222", "+16175550233", "+16175550244", "+16175550255",
]
USERS = [{"name": f"Agent Number{i}", "email": f"agent{i}@example.com"} for i in range(10)]


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def jwt_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_jwt_keypair(tmp_path_factory.mktemp("jwt"))


def _start(tls_dir: Path, jwt_cert: Path | None = None, **kw: Any) -> SalesforceSandbox:
    auth = AuthConfig(jwt_certificate=jwt_cert.read_bytes() if jwt_cert else None)
    return start_salesforce_sandbox(tls_dir, seed=7, external_numbers=NUMBERS, users=USERS, auth=auth, **kw)


@pytest.fixture(scope="module")
def sb(tls_dir: Path, jwt_keys: tuple[Path, Path]) -> Iterator[SalesforceSandbox]:
    sandbox = _start(tls_dir, jwt_keys[1])
    yield sandbox
    sandbox.stop()
    assert sandbox.server.errors == [] and sandbox.app.bulk_errors == []


@pytest.fixture()
def fresh(tls_dir: Path) -> Iterator[SalesforceSandbox]:
    """A sandbox of its own, for tests that change faults, limits or sessions."""
    sandbox = _start(tls_dir, faults=SalesforceFaults(seed=3))
    yield sandbox
    sandbox.stop()
    assert sandbox.server.errors == [] and sandbox.app.bulk_errors == []


def client(sandbox: SalesforceSandbox, token: str | None = None) -> httpx.Client:
    tok = token or sandbox.app.issue_token()
    return httpx.Client(base_url=sandbox.url, verify=trust(sandbox),
                        headers={"Authorization": f"Bearer {tok}"}, timeout=20)


def trust(sandbox: SalesforceSandbox) -> ssl.SSLContext:
    """The generated CA as the only trust anchor."""
    return ssl.create_default_context(cafile=sandbox.ca_path)


@pytest.fixture()
def c(sb: SalesforceSandbox) -> Iterator[httpx.Client]:
    with client(sb) as cl:
        yield cl


def q(cl: httpx.Client, soql_text: str) -> httpx.Response:
    return cl.get(f"{V}/query", params={"q": soql_text})


def create(cl: httpx.Client, records: list[dict[str, Any]], all_or_none: bool = False) -> list[dict[str, Any]]:
    r = cl.post(f"{V}/composite/sobjects", json={"allOrNone": all_or_none, "records": records})
    assert r.status_code == 200, r.text
    return r.json()


def task(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Task"}, "Subject": "Call", "TaskSubtype": "Call", "Type": "Call",
            "CallType": "Inbound", **fields}


def code_of(result: dict[str, Any]) -> str:
    return result["errors"][0]["statusCode"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(key_path: Path, claims: dict[str, Any]) -> str:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    return f"{head}.{body}.{b64url(sig)}"


# --------------------------------------------------------------------------
# OAuth (§7) and sessions (§4, §8)
# --------------------------------------------------------------------------


def test_password_and_client_credentials_flows(sb: SalesforceSandbox) -> None:
    token_url = f"{sb.url}/services/oauth2/token"
    with httpx.Client(verify=trust(sb)) as h:
        ok = h.post(token_url, data={"grant_type": "password", "client_id": "sandbox-consumer-key",
                                     "client_secret": "sandbox-consumer-secret",
                                     "username": "integration@aircall-sync.sandbox",
                                     "password": "sandbox-passwordSANDBOXTOKEN"})
        assert ok.status_code == 200
        body = ok.json()
        assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= body.keys()
        assert body["token_type"] == "Bearer" and body["instance_url"] == sb.url
        assert body["id"].endswith(sb.store.integration_user_id)
        bad = h.post(token_url, data={"grant_type": "password", "client_id": "sandbox-consumer-key",
                                      "client_secret": "sandbox-consumer-secret",
                                      "username": "integration@aircall-sync.sandbox", "password": "sandbox-password"})
        assert bad.status_code == 400 and bad.json() == {"error": "invalid_grant",
                                                          "error_description": "authentication failure"}
        basic = h.post(token_url, data={"grant_type": "client_credentials"},
                       auth=("sandbox-consumer-key", "sandbox-consumer-secret"))
        assert basic.status_code == 200
        form = h.post(token_url, data={"grant_type": "client_credentials", "client_id": "sandbox-consumer-key",
                                       "client_secret": "sandbox-consumer-secret"})
        assert form.status_code == 200
        wrong = h.post(token_url, data={"grant_type": "client_credentials"}, auth=("sandbox-consumer-key", "nope"))
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"
        weird = h.post(token_url, data={"grant_type": "authorization_code"})
        assert weird.json()["error"] == "unsupported_grant_type"
        me = h.get(f"{sb.url}{V}/limits", headers={"Authorization": f"Bearer {basic.json()['access_token']}"})
        assert me.status_code == 200
    assert sb.store.count("auth") >= 6


def test_jwt_bearer_flow(sb: SalesforceSandbox, jwt_keys: tuple[Path, Path]) -> None:
    key = jwt_keys[0]
    url = f"{sb.url}/services/oauth2/token"
    good = {"iss": "sandbox-consumer-key", "sub": "integration@aircall-sync.sandbox",
            "aud": "https://login.salesforce.com", "exp": int(time.time()) + 180}
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    with httpx.Client(verify=trust(sb)) as h:
        r = h.post(url, data={"grant_type": grant, "assertion": make_jwt(key, good)})
        assert r.status_code == 200, r.text
        tok = r.json()["access_token"]
        assert h.get(f"{sb.url}{V}/sobjects", headers={"Authorization": f"Bearer {tok}"}).status_code == 200
        for claims, error in (
            ({**good, "exp": int(time.time()) - 5}, "invalid_grant"),
            ({**good, "iss": "someone-else"}, "invalid_client_id"),
            ({**good, "sub": "nobody@example.com"}, "invalid_grant"),
            ({k: v for k, v in good.items() if k != "aud"}, "invalid_grant"),
        ):
            bad = h.post(url, data={"grant_type": grant, "assertion": make_jwt(key, claims)})
            assert bad.status_code == 400 and bad.json()["error"] == error, claims
        tampered = make_jwt(key, good).rsplit(".", 1)[0] + "." + b64url(b"x" * 256)
        assert h.post(url, data={"grant_type": grant, "assertion": tampered}).json()["error"] == "invalid_grant"


def test_fixed_token_auth_and_bad_versions(sb: SalesforceSandbox) -> None:
    with client(sb, sb.app.auth.fixed_token) as cl:
        assert cl.get(f"{V}/sobjects").status_code == 200
        old = cl.get("/services/data/v39.0/sobjects")
        assert old.status_code == 404 and old.json()[0]["errorCode"] == "NOT_FOUND"
        assert cl.get("/services/data/v40.0/sobjects").status_code == 200
    with httpx.Client(base_url=sb.url, verify=trust(sb)) as anon:
        r = anon.get(f"{V}/sobjects")
        assert r.status_code == 401
        assert r.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def test_session_expiry_and_reauth(fresh: SalesforceSandbox) -> None:
    fresh.app.faults.expire_after_requests = 2
    tok = fresh.app.issue_token()
    with client(fresh, tok) as cl:
        assert cl.get(f"{V}/limits").status_code == 200
        assert cl.get(f"{V}/limits").status_code == 200
        r = cl.get(f"{V}/limits")
        assert r.status_code == 401 and r.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    new = httpx.post(f"{fresh.url}/services/oauth2/token", verify=trust(fresh),
                     data={"grant_type": "client_credentials"},
                     auth=("sandbox-consumer-key", "sandbox-consumer-secret")).json()["access_token"]
    fresh.app.faults.expire_after_requests = None
    with client(fresh, new) as cl:
        assert cl.get(f"{V}/limits").status_code == 200
        fresh.app.expire_sessions()
        assert cl.get(f"{V}/limits").status_code == 401


# --------------------------------------------------------------------------
# Describe (§1, §2, §3, §5) and org options
# --------------------------------------------------------------------------


def _fields(cl: httpx.Client, obj: str, version: str = "63.0") -> dict[str, dict[str, Any]]:
    r = cl.get(f"/services/data/v{version}/sobjects/{obj}/describe")
    assert r.status_code == 200, r.text
    return {f["name"]: f for f in r.json()["fields"]}


def test_describe_task_and_voice_objects(c: httpx.Client) -> None:
    task_fields = _fields(c, "Task")
    reference = json.loads((Path(__file__).parents[2] / "shared/reference/salesforce/task_call_fields.json")
                           .read_text()) if (Path(__file__).parents[2] / "shared").exists() else None
    names = set(reference["fields"]) - {"RecordTypeId"} if reference else {"Subject", "CallObject"}
    assert names <= task_fields.keys()
    st = task_fields["TaskSubtype"]
    assert st["restrictedPicklist"] and not st["updateable"] and st["createable"]
    assert [p["value"] for p in task_fields["CallType"]["picklistValues"]] == ["Inbound", "Internal", "Outbound"]
    assert task_fields["Description"]["length"] == 32000 and not task_fields["Description"]["filterable"]
    assert task_fields["Status"]["defaultedOnCreate"] and not task_fields["Status"]["nillable"]
    assert task_fields["WhoId"]["referenceTo"] == ["Contact", "Lead"]
    assert "aircall__Waiting_Time__c" in task_fields and task_fields["aircall__Has_connected__c"]["type"] == "boolean"
    voice = c.get(f"{V}/sobjects/VoiceCall/describe").json()
    assert voice["createable"] is True and voice["keyPrefix"] == "0LQ"
    vf = {f["name"]: f for f in voice["fields"]}
    assert vf["VendorCallKey"]["idLookup"] and not vf["VendorCallKey"]["externalId"]
    assert not vf["CallType"]["nillable"] and not vf["CallType"]["updateable"] and vf["RelatedRecordId"]["updateable"]
    assert c.get("/services/data/v59.0/sobjects/VoiceCall/describe").json()["createable"] is False
    avo = _fields(c, "aircall__Aircall_Voice__c")
    assert {"aircall__Call_Id__c", "aircall__Tags__c", "aircall__Contact__c", "aircall__Answered_By__c"} <= avo.keys()
    account = _fields(c, "Account")
    assert {"IsPersonAccount", "PersonContactId", "PersonMobilePhone"} <= account.keys()
    glob = c.get(f"{V}/sobjects").json()
    assert {"Task", "Contact", "Lead", "Account", "Case", "Opportunity", "OpportunityContactRole", "User",
            "RecordType", "VoiceCall"} <= {s["name"] for s in glob["sobjects"]}


def test_org_options_shape_the_org(tls_dir: Path) -> None:
    opts = OrgOptions(person_accounts=False, task_type_visible=False,
                      missing_fields=frozenset({"Task.aircall__Country__c"}), voicecall_createable=False,
                      extra_required_task_field="Region__c")
    sandbox = _start(tls_dir, options=opts)
    try:
        with client(sandbox) as cl:
            tf = _fields(cl, "Task")
            assert "Type" not in tf and "aircall__Country__c" not in tf
            assert tf["Region__c"]["nillable"] is False
            assert "IsPersonAccount" not in _fields(cl, "Account")
            (hidden,) = create(cl, [task(Region__c="EU")])  # task() writes Type, which FLS hides here
            assert code_of(hidden) == "INVALID_FIELD" and hidden["errors"][0]["fields"] == ["Type"]
            assert q(cl, "SELECT Id, Type FROM Task").json()[0]["errorCode"] == "INVALID_FIELD"
            no_type = {k: v for k, v in task(Region__c="EU").items() if k != "Type"}
            ok, missing = create(cl, [no_type, {k: v for k, v in no_type.items() if k != "Region__c"}])
            assert ok["success"] and code_of(missing) == "REQUIRED_FIELD_MISSING"
            assert missing["errors"][0]["fields"] == ["Region__c"]
            bad = q(cl, "SELECT Id, IsPersonAccount FROM Account")
            assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
            assert cl.get(f"{V}/sobjects/VoiceCall/describe").json()["createable"] is False
            vc = create(cl, [{"attributes": {"type": "VoiceCall"}, "CallType": "Inbound",
                              "CallStartDateTime": "2025-01-01T10:00:00Z", "CallEndDateTime": "2025-01-01T10:05:00Z",
                              "FromPhoneNumber": "+16176105413", "ToPhoneNumber": "+18882406923"}])
            assert code_of(vc[0]) == "INSUFFICIENT_ACCESS_OR_READONLY"
    finally:
        sandbox.stop()


# --------------------------------------------------------------------------
# Records and validation (§1, §2, §4, §6)
# --------------------------------------------------------------------------


def test_collections_mixed_success_and_all_or_none(sb: SalesforceSandbox, c: httpx.Client) -> None:
    contact = sb.summary.contacts[0]
    res = create(c, [
        task(WhoId=contact, CallObject="mixed-1", Status="Completed"),
        {"attributes": {"type": "Lead"}, "LastName": "Nocompany"},
        {"attributes": {"type": "Contact"}, "LastName": "Fresh", "MobilePhone": "+1 617 555 9999"},
    ])
    assert [r["success"] for r in res] == [True, False, True]
    assert res[1] == {"id": None, "success": False, "errors": [{
        "statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]",
        "fields": ["Company"]}]}
    t = sb.store.get(res[0]["id"])
    assert t is not None and t["IsClosed"] and t["CompletedDateTime"] and t["Priority"] == "Normal"
    assert t["OwnerId"] == sb.store.integration_user_id and t["Id"].startswith("00T") and len(t["Id"]) == 18
    assert t["AccountId"] == sb.store.get(contact)["AccountId"]  # type: ignore[index]
    assert res[2]["id"].startswith("003")
    before = len(sb.store.records("Task"))
    rolled = create(c, [task(CallObject="aon-1"), task(CallType="Sideways")], all_or_none=True)
    assert code_of(rolled[0]) == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert code_of(rolled[1]) == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert rolled[0]["id"] is None and len(sb.store.records("Task")) == before
    too_many = c.post(f"{V}/composite/sobjects", json={"records": [task() for _ in range(201)]})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


@pytest.mark.parametrize(
    ("record", "code", "fields"),
    [
        (task(Bogus__c="x"), "INVALID_FIELD", ["Bogus__c"]),
        ({"attributes": {"type": "Lead"}, "Company": "X"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({"attributes": {"type": "Contact"}, "FirstName": "Only"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ({"attributes": {"type": "VoiceCall"}, "CallType": "Inbound"}, "REQUIRED_FIELD_MISSING",
         ["CallStartDateTime", "CallEndDateTime", "FromPhoneNumber", "ToPhoneNumber"]),
        (task(TaskSubtype="Meeting"), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["TaskSubtype"]),
        (task(CallType="Incoming"), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["CallType"]),
        ({"attributes": {"type": "VoiceCall"}, "CallType": "Internal", "CallStartDateTime": "2025-01-01T10:00:00Z",
          "CallEndDateTime": "2025-01-01T10:01:00Z", "FromPhoneNumber": "1", "ToPhoneNumber": "2"},
         "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["CallType"]),
        ({"attributes": {"type": "VoiceCall"}, "CallType": "Inbound", "VendorType": "Aircall",
          "CallStartDateTime": "2025-01-01T10:00:00Z", "CallEndDateTime": "2025-01-01T10:01:00Z",
          "FromPhoneNumber": "1", "ToPhoneNumber": "2"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["VendorType"]),
        (task(Subject="s" * 256), "STRING_TOO_LONG", ["Subject"]),
        (task(CallDisposition="d" * 256), "STRING_TOO_LONG", ["CallDisposition"]),
        (task(CallObject="o" * 256), "STRING_TOO_LONG", ["CallObject"]),
        (task(Description="x" * 32001), "STRING_TOO_LONG", ["Description"]),
        (task(WhoId="not-an-id"), "MALFORMED_ID", ["WhoId"]),
        (task(CallDurationInSeconds="long"), "JSON_PARSER_ERROR", ["CallDurationInSeconds"]),
        (task(CallDurationInSeconds=123456789), "NUMBER_OUTSIDE_VALID_RANGE", ["CallDurationInSeconds"]),
        (task(IsClosed=True), "INVALID_FIELD_FOR_INSERT_UPDATE", ["IsClosed"]),
        (task(Id="00T8d0000000001AAA"), "INVALID_FIELD_FOR_INSERT_UPDATE", ["Id"]),
        ({"attributes": {"type": "Nope__c"}, "Name": "x"}, "INVALID_TYPE", []),
    ],
)
def test_validation_errors(c: httpx.Client, record: dict[str, Any], code: str, fields: list[str]) -> None:
    (res,) = create(c, [record])
    assert not res["success"] and code_of(res) == code, res
    assert res["errors"][0]["fields"] == fields


def test_reference_rules(sb: SalesforceSandbox, c: httpx.Client) -> None:
    lead = next(lid for lid in sb.summary.leads if not sb.store.get(lid)["IsConverted"])  # type: ignore[index]
    converted = next(lid for lid in sb.summary.leads if sb.store.get(lid)["IsConverted"])  # type: ignore[index]
    account = sb.summary.accounts[0]
    contact = sb.summary.contacts[0]
    missing_contact = soql.id15_to_18("0038d00000ZZZZZ")
    res = create(c, [
        task(WhoId=lead, WhatId=account),
        task(WhoId=account),
        task(WhoId=missing_contact),
        task(WhoId=converted),
        task(WhoId=lead),
        task(WhoId=contact, WhatId=account, OwnerId=next(u["id"] for u in sb.summary.users
                                                         if u["id"] and not u["active"])),
    ])
    assert code_of(res[0]) == "FIELD_INTEGRITY_EXCEPTION" and res[0]["errors"][0]["fields"] == ["WhoId", "WhatId"]
    assert code_of(res[1]) == "FIELD_INTEGRITY_EXCEPTION"
    assert code_of(res[2]) == "INVALID_CROSS_REFERENCE_KEY"
    assert code_of(res[3]) == "CANNOT_UPDATE_CONVERTED_LEAD"
    assert res[4]["success"]
    assert code_of(res[5]) == "INACTIVE_OWNER_OR_USER"


def test_update_rules_and_single_record_endpoints(sb: SalesforceSandbox, c: httpx.Client) -> None:
    created = c.post(f"{V}/sobjects/Task", json={"Subject": "Call", "TaskSubtype": "Call", "CallObject": "u-1"})
    assert created.status_code == 201 and created.json()["success"]
    tid = created.json()["id"]
    assert sb.store.get(tid)["Status"] == "Not Started"  # type: ignore[index]
    refused = c.patch(f"{V}/sobjects/Task/{tid}", json={"TaskSubtype": "Call"})
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert c.patch(f"{V}/sobjects/Task/{tid}", json={"Status": "Completed"}).status_code == 204
    got = c.get(f"{V}/sobjects/Task/{tid}").json()
    assert got["IsClosed"] is True and got["attributes"]["type"] == "Task"
    upd = c.patch(f"{V}/composite/sobjects", json={"records": [
        {"attributes": {"type": "Task"}, "id": tid, "CallDisposition": "['aircall']"},
        {"attributes": {"type": "Task"}, "id": tid, "TaskSubtype": "Email"},
        {"attributes": {"type": "Task"}, "CallDisposition": "no id"},
    ]}).json()
    assert upd[0] == {"id": tid, "success": True, "errors": []}
    assert code_of(upd[1]) == "INVALID_FIELD_FOR_INSERT_UPDATE" and code_of(upd[2]) == "MISSING_ARGUMENT"
    vc = c.post(f"{V}/sobjects/VoiceCall", json={
        "CallType": "Inbound", "VendorType": "ContactCenter", "CallStartDateTime": "2025-01-01T10:00:00Z",
        "CallEndDateTime": "2025-01-01T10:05:00.000+0000", "FromPhoneNumber": "+16176105413",
        "ToPhoneNumber": "+18882406923", "VendorCallKey": "4242", "CallCenterId": sb.store.call_center_id})
    assert vc.status_code == 201, vc.text
    vid = vc.json()["id"]
    assert vid.startswith("0LQ") and sb.store.get(vid)["Name"].startswith("VC-")  # type: ignore[index]
    assert c.patch(f"{V}/sobjects/VoiceCall/{vid}", json={"CallType": "Outbound"}).json()[0]["errorCode"] == \
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert c.patch(f"{V}/sobjects/VoiceCall/{vid}", json={"RelatedRecordId": sb.summary.contacts[0]}).status_code == 204
    by_key = c.get(f"{V}/sobjects/VoiceCall/VendorCallKey/4242")
    assert by_key.status_code == 200 and by_key.json()["Id"] == vid
    old = c.post("/services/data/v59.0/sobjects/VoiceCall", json={"CallType": "Inbound"})
    assert old.status_code == 400 and old.json()[0]["errorCode"] == "INVALID_TYPE_FOR_OPERATION"
    retrieved = c.get(f"{V}/composite/sobjects/Task", params={"ids": tid, "fields": "Id,CallDisposition"}).json()
    assert retrieved[0]["CallDisposition"] == "['aircall']"
    assert c.delete(f"{V}/sobjects/Task/{tid}").status_code == 204
    assert c.get(f"{V}/sobjects/Task/{tid}").status_code == 404
    assert sb.store.get(tid) is None


def test_composite_with_references(sb: SalesforceSandbox, c: httpx.Client) -> None:
    body = {"allOrNone": False, "compositeRequest": [
        {"method": "POST", "url": f"{V}/sobjects/Lead", "referenceId": "newLead",
         "body": {"LastName": "Caller", "Company": "Unknown company", "Phone": "+33 6 99 99 99 99"}},
        {"method": "GET", "url": f"{V}/query?q=SELECT+Id,Name+FROM+Lead+WHERE+Id='@{{newLead.id}}'",
         "referenceId": "found"},
        {"method": "POST", "url": f"{V}/composite/sobjects", "referenceId": "tasks",
         "body": {"records": [task(WhoId="@{found.records[0].Id}", CallObject="comp-1")]}},
        {"method": "PATCH", "url": f"{V}/sobjects/Task/@{{tasks[0].id}}", "referenceId": "upd",
         "body": {"Status": "Completed"}},
    ]}
    r = c.post(f"{V}/composite", json=body)
    assert r.status_code == 200
    out = r.json()["compositeResponse"]
    assert [x["httpStatusCode"] for x in out] == [201, 200, 200, 204]
    lead_id = out[0]["body"]["id"]
    t = sb.store.find_one("Task", CallObject="comp-1")
    assert t["WhoId"] == lead_id and t["IsClosed"]
    assert sb.store.count("composite.collections") >= 1
    halted = c.post(f"{V}/composite", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": f"{V}/sobjects/Contact", "referenceId": "a", "body": {"LastName": "Rolled"}},
        {"method": "POST", "url": f"{V}/sobjects/Contact", "referenceId": "b", "body": {"FirstName": "NoLast"}},
        {"method": "GET", "url": f"{V}/sobjects/Contact/@{{a.id}}", "referenceId": "c"},
    ]}).json()["compositeResponse"]
    assert [x["httpStatusCode"] for x in halted] == [400, 400, 400]
    assert halted[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert halted[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert sb.store.find("Contact", LastName="Rolled") == []
    inner = c.post(f"{V}/composite", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": f"{V}/sobjects/Contact", "referenceId": "c1", "body": {"LastName": "Outer"}},
        {"method": "POST", "url": f"{V}/composite/sobjects", "referenceId": "coll",
         "body": {"allOrNone": False, "records": [task(CallObject="inner-ok"), task(CallType="Nope")]}},
    ]}).json()["compositeResponse"]
    assert inner[1]["httpStatusCode"] == 200 and code_of(inner[1]["body"][0]) == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert inner[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert not sb.store.find("Contact", LastName="Outer") and not sb.store.find("Task", CallObject="inner-ok")
    too_many = c.post(f"{V}/composite", json={"compositeRequest": [
        {"method": "GET", "url": f"{V}/limits", "referenceId": f"r{i}"} for i in range(26)]})
    assert too_many.status_code == 400


# --------------------------------------------------------------------------
# SOQL (§6, §9)
# --------------------------------------------------------------------------


def test_soql_filters_order_limit_relationships(sb: SalesforceSandbox, c: httpx.Client) -> None:
    contact_id = next(iter(sb.summary.open_cases))
    r = q(c, f"SELECT Id, CaseNumber, Subject FROM Case WHERE ContactId = '{contact_id}' AND IsClosed = false "
             "ORDER BY LastModifiedDate DESC")
    assert r.status_code == 200
    assert [x["Id"] for x in r.json()["records"]] == sb.summary.open_cases[contact_id]
    cid, opps = next(iter(sb.summary.open_opportunities.items()))
    r = q(c, f"SELECT OpportunityId, Opportunity.IsClosed, Contact.Account.Name FROM OpportunityContactRole "
             f"WHERE ContactId = '{cid}' AND Opportunity.IsClosed = false")
    recs = r.json()["records"]
    assert [x["OpportunityId"] for x in recs] == opps and recs[0]["Opportunity"]["IsClosed"] is False
    ids = sb.summary.contacts[:3]
    r = q(c, "SELECT Id, Owner.Email FROM Contact WHERE Id IN ({}) ORDER BY Id DESC LIMIT 2".format(
        ",".join(f"'{i}'" for i in ids)))
    got = r.json()
    assert got["totalSize"] == 2 and [x["Id"] for x in got["records"]] == sorted(ids, reverse=True)[:2]
    assert "Email" in got["records"][0]["Owner"]
    assert q(c, "SELECT COUNT() FROM Contact WHERE NOT (IsPersonAccount = true)").json()["totalSize"] == \
        len([x for x in sb.store.records("Contact") if not x["IsPersonAccount"]])
    leads = q(c, "SELECT Id FROM Lead WHERE IsConverted = false AND (Phone != null OR MobilePhone != null)")
    assert leads.json()["totalSize"] == len([x for x in sb.store.records("Lead") if not x["IsConverted"]])
    acc, opps = next(iter(sb.summary.account_opportunities.items()))
    fallback = q(c, f"SELECT Id FROM Opportunity WHERE AccountId = '{acc}' AND IsClosed = false "
                    "ORDER BY LastModifiedDate DESC").json()
    assert opps[0] in [x["Id"] for x in fallback["records"]]
    nulls = q(c, "SELECT Id, Phone FROM Account ORDER BY Phone DESC NULLS FIRST").json()["records"]
    assert nulls[0]["Phone"] is None and nulls[-1]["Phone"] is not None
    nulls = q(c, "SELECT Id, Phone FROM Account ORDER BY Phone ASC").json()["records"]
    assert nulls[0]["Phone"] is None and nulls[-1]["Phone"] is not None
    not_in = q(c, "SELECT Id FROM Lead WHERE Status NOT IN ('Closed - Converted') AND CreatedDate < "
                  "2100-01-01T00:00:00Z AND CreatedDate = LAST_N_DAYS:5000 OFFSET 1")
    assert not_in.status_code == 200
    sb.store.insert("Contact", LastName="O'Brien\\Smith", FirstName="Pat")
    esc = q(c, r"SELECT Id, Name FROM Contact WHERE LastName = 'o\'brien\\smith'")
    assert esc.json()["totalSize"] == 1
    like = q(c, r"SELECT Id FROM Contact WHERE LastName LIKE 'O\'Bri%'")
    assert like.json()["totalSize"] >= 1


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SELECT Id FROM", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE LastName = 'a' AND FirstName = 'b' OR Email = 'c'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE LastName = \"x\"", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE LastName = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id, Bogus__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE Account.Bogus = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE"),
        ("SELECT Id FROM Task WHERE IsClosed = 'false'", "INVALID_FIELD"),
        ("SELECT Id FROM Task WHERE Description = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Task WHERE WhoId = 'abc'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Contact GROUP BY LastName", "MALFORMED_QUERY"),
    ],
)
def test_soql_errors(c: httpx.Client, text: str, code: str) -> None:
    r = q(c, text)
    assert r.status_code == 400 and r.json()[0]["errorCode"] == code, r.text


def test_soql_paging_and_uri_limit(fresh: SalesforceSandbox) -> None:
    store = fresh.store
    with store.lock:
        for i in range(2500):
            store.insert("Task", Subject="Call", CallObject=f"page-{i}", Status="Completed")
    with client(fresh) as cl:
        first = q(cl, "SELECT Id, CallObject FROM Task WHERE Subject = 'Call' ORDER BY CallObject").json()
        assert first["totalSize"] == 2500 and not first["done"] and len(first["records"]) == 2000
        nxt = cl.get(first["nextRecordsUrl"]).json()
        assert nxt["done"] and len(nxt["records"]) == 500 and "nextRecordsUrl" not in nxt
        assert cl.get(f"{V}/query/01gNOPE-2000").json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
        ids = ",".join(f"'page-{i}'" for i in range(300))
        assert q(cl, f"SELECT Id FROM Task WHERE CallObject IN ({ids})").json()["totalSize"] == 300
        long_in = ",".join(f"'{i:020d}'" for i in range(800))
        r = q(cl, f"SELECT Id FROM Task WHERE CallObject IN ({long_in})")
        assert r.status_code == 414 and r.json()[0]["errorCode"] == "URI_TOO_LONG"
        big = cl.get(f"{V}/limits", headers={"X-Padding": "p" * 9000, "X-More": "m" * 8000})
        assert big.status_code == 431
        composite = cl.post(f"{V}/composite", json={"compositeRequest": [
            {"method": "GET", "url": f"{V}/query?q=SELECT+Id+FROM+Task+WHERE+CallObject+IN+({long_in})",
             "referenceId": "big"}]})
        assert composite.json()["compositeResponse"][0]["httpStatusCode"] == 200


# --------------------------------------------------------------------------
# SOSL phone matching (§5)
# --------------------------------------------------------------------------


def _search(cl: httpx.Client, terms: str, returning: str = "Contact(Id, Phone, MobilePhone, HomePhone, OtherPhone, "
            "AssistantPhone), Lead(Id, Phone, MobilePhone, IsConverted), Account(Id, Phone, PersonMobilePhone, "
            "PersonHomePhone, PersonOtherPhone)") -> list[dict[str, Any]]:
    r = cl.get(f"{V}/search", params={"q": f"FIND {{{terms}}} IN PHONE FIELDS RETURNING {returning}"})
    assert r.status_code == 200, r.text
    return r.json()["searchRecords"]


def test_sosl_phone_matching_semantics(fresh: SalesforceSandbox) -> None:
    store = fresh.store
    a = store.insert("Contact", LastName="Paren", Phone="(617) 610-9913")
    b = store.insert("Contact", LastName="Dots", MobilePhone="617.610.9913")
    d = store.insert("Contact", LastName="Plus", AssistantPhone="+1 617-610-9913")
    lead = store.insert("Lead", LastName="Lead", Company="X", MobilePhone="617-610-9913")
    with client(fresh) as cl:
        assert {r["Id"] for r in _search(cl, "6176109913")} == {a, b, lead}
        assert {r["Id"] for r in _search(cl, "16176109913")} == {d}
        assert _search(cl, "\\+16176109913") and {r["Id"] for r in _search(cl, "\\+16176109913")} == {d}
        assert {r["Id"] for r in _search(cl, "6176109913 OR 16176109913")} == {a, b, d, lead}
        assert {r["Id"] for r in _search(cl, '"617 610 9913"')} == {a, b, lead}
        assert _search(cl, "617 610 9913") == []
        assert {r["Id"] for r in _search(cl, "617610991*")} >= {a, b, lead}
        only_contacts = _search(cl, "6176109913", "Contact(Id, LastModifiedDate ORDER BY LastName LIMIT 1)")
        assert [r["Id"] for r in only_contacts] == [b]
        assert only_contacts[0]["attributes"]["type"] == "Contact"
        filtered = _search(cl, "6176109913", "Lead(Id WHERE IsConverted = false)")
        assert [r["Id"] for r in filtered] == [lead]
        bad = cl.get(f"{V}/search", params={"q": "FIND {+16176109913} IN PHONE FIELDS RETURNING Contact(Id)"})
        assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "MALFORMED_SEARCH"
        # §5: over 4,000 characters AND becomes OR; over 10,000 nothing comes back.
        pad = " OR ".join(f"{n:012d}" for n in range(300))
        assert {r["Id"] for r in _search(cl, f"6176109913 AND 16176109913 OR {pad}")} == {a, b, d, lead}
        assert _search(cl, "6176109913 AND 16176109913") == []
        huge = " OR ".join(f"{n:012d}" for n in range(700)) + " OR 6176109913"
        assert len(huge) > 10_000 and _search(cl, huge) == []
    assert store.count("search") == 14


def test_sosl_long_or_of_numbers_sees_writes_at_once(fresh: SalesforceSandbox) -> None:
    """A backfill-sized FIND (hundreds of OR'ed numbers, read as a set) against records just written."""
    pad = [f'"{n:012d}"' for n in range(300)]
    with client(fresh) as cl:
        made = create(cl, [{"attributes": {"type": "Lead"}, "LastName": "New", "Company": "X",
                            "Phone": "(617) 610-7700"}])
        lead = made[0]["id"]
        long_or = " OR ".join([*pad, '"6176107700"'])
        assert len(long_or) > 4_000
        assert [r["Id"] for r in _search(cl, long_or)] == [lead]
        # Exact and wildcard terms in one OR: each keeps its own semantics.
        assert [r["Id"] for r in _search(cl, " OR ".join([*pad, "617610770*"]))] == [lead]
        assert _search(cl, " OR ".join([*pad, "61761077"])) == []
        r = cl.patch(f"{V}/sobjects/Lead/{lead}", json={"Phone": "+44 20 7946 0000"})
        assert r.status_code == 204, r.text
        assert _search(cl, long_or) == []
        assert [r["Id"] for r in _search(cl, " OR ".join([*pad, '"442079460000"']))] == [lead]
        assert cl.delete(f"{V}/sobjects/Lead/{lead}").status_code == 204
        assert _search(cl, " OR ".join([*pad, '"442079460000"'])) == []


def test_sosl_finds_seeded_duplicates_in_other_formats(sb: SalesforceSandbox, c: httpx.Client) -> None:
    summary = sb.summary
    for e164, scenario in summary.scenarios.items():
        holders = summary.numbers.get(e164, [])
        if scenario == "unknown":
            assert not holders
            continue
        for h in holders:
            assert h.stored != e164
            assert h.stored in number_formats(e164)
            digits = soql.digits(h.stored)
            found = {r["Id"] for r in _search(c, digits)}
            assert h.id in found or h.person_contact_id in found, (e164, h)
    dups = [e for e, s in summary.scenarios.items() if s in ("two_contacts", "contact_and_lead", "lead_and_account")]
    assert dups and summary.unknown_numbers
    two = next(e for e, s in summary.scenarios.items() if s == "two_contacts")
    newest = max(summary.numbers[two], key=lambda h: h.last_modified)
    assert summary.expected_match[two] == {"object": "Contact", "id": newest.id}
    converted = next(e for e, s in summary.scenarios.items() if s == "converted_lead")
    assert converted not in summary.expected_match


# --------------------------------------------------------------------------
# Bulk API 2.0 (§4)
# --------------------------------------------------------------------------


def _job(cl: httpx.Client, **spec: Any) -> str:
    r = cl.post(f"{V}/jobs/ingest", json={"object": "Task", "contentType": "CSV", "operation": "insert", **spec})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "Open"
    return r.json()["id"]


def _run(cl: httpx.Client, job: str, csv_text: str) -> dict[str, Any]:
    put = cl.put(f"{V}/jobs/ingest/{job}/batches", content=csv_text.encode(), headers={"Content-Type": "text/csv"})
    assert put.status_code == 201, put.text
    closed = cl.patch(f"{V}/jobs/ingest/{job}", json={"state": "UploadComplete"})
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    # Jobs are processed after the PATCH has answered (salesforce-api.md, Bulk API 2.0): poll, as a client does.
    deadline = time.monotonic() + 30
    while True:
        info = cl.get(f"{V}/jobs/ingest/{job}").json()
        if info["state"] in ("JobComplete", "Failed", "Aborted") or time.monotonic() > deadline:
            return info
        assert info["state"] in ("UploadComplete", "InProgress")
        time.sleep(0.01)


def test_bulk_ingest_full_cycle(sb: SalesforceSandbox, c: httpx.Client) -> None:
    job = _job(c, lineEnding="LF")
    text = ("Subject,TaskSubtype,CallType,CallObject,CallDurationInSeconds,Description\n"
            "Call,Call,Inbound,bulk-1,12,\"multi\nline, with comma\"\n"
            "Call,Call,Sideways,bulk-2,0,\n"
            "Call,Call,Outbound,bulk-3,notanumber,\n")
    info = _run(c, job, text)
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == 3 and info["numberRecordsFailed"] == 2
    ok = c.get(f"{V}/jobs/ingest/{job}/successfulResults/")
    assert ok.headers["content-type"].startswith("text/csv")
    lines = ok.text.splitlines()
    assert lines[0].startswith('"sf__Id","sf__Created","Subject"')
    created = sb.store.find_one("Task", CallObject="bulk-1")
    assert created["Description"] == "multi\nline, with comma" and created["CallDurationInSeconds"] == 12
    assert created["Id"] in ok.text
    failed = c.get(f"{V}/jobs/ingest/{job}/failedResults/").text
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in failed and "INVALID_TYPE_ON_FIELD_IN_RECORD" in failed
    again = c.put(f"{V}/jobs/ingest/{job}/batches", content=b"x", headers={"Content-Type": "text/csv"})
    assert again.status_code >= 400
    upd = _job(c, operation="update", lineEnding="CRLF")
    info = _run(c, upd, f"Id,Status\r\n{created['Id']},Completed\r\n")
    assert info["numberRecordsFailed"] == 0 and sb.store.get(created["Id"])["IsClosed"]  # type: ignore[index]
    assert sb.store.count("bulk") >= 10


@pytest.mark.parametrize(("ending", "body"), [("CRLF", "Subject,CallObject\nCall,le-1\nCall,le-2\n"),
                                              ("LF", "Subject,CallObject\r\nCall,le-3\r\n")])
def test_bulk_line_ending_mismatch_fails_the_job(sb: SalesforceSandbox, c: httpx.Client, ending: str,
                                                 body: str) -> None:
    job = _job(c, lineEnding=ending)
    info = _run(c, job, body)
    assert info["state"] == "Failed" and "Field name not found" in info["errorMessage"]
    assert info["numberRecordsProcessed"] == 0
    assert c.get(f"{V}/jobs/ingest/{job}/unprocessedrecords/").status_code == 200
    assert not sb.store.find("Task", CallObject="le-1") and not sb.store.find("Task", CallObject="le-3")


# --------------------------------------------------------------------------
# Faults and limits (§4)
# --------------------------------------------------------------------------


def test_unable_to_lock_row_injection(fresh: SalesforceSandbox) -> None:
    fresh.app.faults.lock_next(2)
    with client(fresh) as cl:
        res = create(cl, [task(CallObject=f"lock-{i}") for i in range(4)])
        assert [r["success"] for r in res] == [False, False, True, True]
        assert code_of(res[0]) == "UNABLE_TO_LOCK_ROW"
        fresh.app.faults.lock_next(1)
        single = cl.post(f"{V}/sobjects/Task", json={"Subject": "Call"})
        assert single.status_code == 400 and single.json()[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
        fresh.app.faults.lock_probability = 0.5
        many = create(cl, [task(CallObject=f"p-{i}") for i in range(100)])
        failures = sum(1 for r in many if not r["success"])
        assert 20 < failures < 80
        assert all(code_of(r) == "UNABLE_TO_LOCK_ROW" for r in many if not r["success"])


def test_limit_header_limits_and_request_limit_exceeded(fresh: SalesforceSandbox) -> None:
    with client(fresh) as cl:
        a = cl.get(f"{V}/limits")
        b = cl.get(f"{V}/sobjects/Task/describe")
        used_a = int(a.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
        assert b.headers["Sforce-Limit-Info"] == f"api-usage={used_a + 1}/15000"
        assert a.json()["DailyApiRequests"]["Max"] == 15000
        fresh.app.faults.limit_exceeded_next(1)
        r = cl.get(f"{V}/limits")
        assert r.status_code == 403 and r.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert cl.get(f"{V}/limits").status_code == 200
        fresh.app.set_api_usage(15000)
        assert cl.get(f"{V}/limits").status_code == 403


def test_http_faults_use_salesforce_error_shape(tls_dir: Path) -> None:
    http_faults = Faults()
    sandbox = _start(tls_dir, http_faults=http_faults)
    try:
        http_faults.script(["503", "500"], api="salesforce", path_prefix="/services/data")
        with client(sandbox) as cl:
            r = cl.get(f"{V}/limits")
            assert r.status_code == 503 and r.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
            assert "Retry-After" in r.headers
            assert cl.get(f"{V}/limits").json()[0]["errorCode"] == "UNKNOWN_EXCEPTION"
            assert cl.get(f"{V}/limits").status_code == 200
    finally:
        sandbox.stop()


# --------------------------------------------------------------------------
# Store access from tests, seed, simple-salesforce
# --------------------------------------------------------------------------


def test_store_modify_is_visible_through_the_api(sb: SalesforceSandbox, c: httpx.Client) -> None:
    cid, cases = next(iter(sb.summary.open_cases.items()))
    sb.store.modify(cases[0], Status="Closed")
    r = q(c, f"SELECT Id FROM Case WHERE ContactId = '{cid}' AND IsClosed = false").json()
    assert cases[0] not in [x["Id"] for x in r["records"]]
    contact = sb.summary.contacts[1]
    sb.store.modify(contact, LastName="Renamed", FirstName="Ren")
    assert q(c, f"SELECT Name FROM Contact WHERE Id = '{contact}'").json()["records"][0]["Name"] == "Ren Renamed"
    person = sb.summary.person_accounts[0]
    pc = sb.store.get(person)["PersonContactId"]  # type: ignore[index]
    refused = c.patch(f"{V}/sobjects/Contact/{pc}", json={"LastName": "Direct"})
    assert refused.status_code == 400
    assert c.patch(f"{V}/sobjects/Account/{person}", json={"PersonMobilePhone": "+33 6 11 22 33 44"}).status_code == 204
    assert sb.store.get(pc)["MobilePhone"] == "+33 6 11 22 33 44"  # type: ignore[index]


def test_seed_is_deterministic_and_covers_the_rules() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    stores = [SalesforceStore(clock=lambda: now) for _ in range(2)]
    summaries = [seed_org(s, 11, NUMBERS, USERS, now=now) for s in stores]
    assert stores[0].records("Contact") == stores[1].records("Contact")
    assert summaries[0].expected_match == summaries[1].expected_match
    s = summaries[0]
    cases = {u["case"] for u in s.users}
    assert {"inactive", "active, created within the last day", "no salesforce user",
            "active, e-mail in another case"} <= cases
    assert sum(1 for u in s.users if u["id"] and not u["active"]) == 1
    assert s.person_accounts and s.open_cases and s.closed_cases
    assert s.integration_user_id in s.owners.values()
    fields = {h.field for hs in s.numbers.values() for h in hs}
    assert {"Phone", "MobilePhone"} <= fields
    assert 0.25 <= len(s.unknown_numbers) / len(NUMBERS) <= 0.45


def test_simple_salesforce_against_the_sandbox(sb: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from simple_salesforce import Salesforce

    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override Session.verify (merge_environment_settings).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = requests.Session()
    session.verify = sb.ca_path
    sf = Salesforce(instance_url=sb.url, session_id=sb.app.issue_token(), version="63.0", session=session)
    res = sf.query("SELECT Id, Name FROM Contact LIMIT 5")
    assert res["totalSize"] == 5 and res["records"][0]["attributes"]["type"] == "Contact"
    found = sf.search("FIND {6176105413} IN PHONE FIELDS RETURNING Contact(Id)")
    assert "searchRecords" in found
    out = sf.restful("composite/sobjects", method="POST",
                     json={"allOrNone": False, "records": [task(CallObject="ss-1")]})
    assert out[0]["success"]
    desc = sf.Task.describe()
    assert any(f["name"] == "CallObject" for f in desc["fields"])
    assert sf.api_usage["api-usage"].total == 15000
    assert sb.store.find_one("Task", CallObject="ss-1")["Subject"] == "Call"

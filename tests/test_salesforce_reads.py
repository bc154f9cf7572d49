"""How the client reads the org (DESIGN §5): several queries of one step go in one Composite request (one call
toward the org's API limit), a query alone goes by URL, searches always by URL (Composite does not carry them).
Counted on the Salesforce emulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_settings

from aircall_sync.runner import connect_org
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions
from aircall_sync.settings import load_settings

V = "/services/data/v63.0"


@pytest.fixture(scope="module")
def org_and_server(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("reads")
    with Sandbox(SandboxOptions(calls=20, seed=3, days=1)) as box:
        settings = load_settings(write_settings(tmp / "settings.toml",
                                                box.settings(tmp / "state.sqlite3", targets=("salesforce",))))
        yield connect_org(settings), box.salesforce.server


def counted(server, action):
    before = (server.count(method="GET", path_prefix=f"{V}/query"), server.count(method="POST", path_prefix=f"{V}/composite"),
              server.count(method="GET", path_prefix=f"{V}/search"))
    result = action()
    after = (server.count(method="GET", path_prefix=f"{V}/query"), server.count(method="POST", path_prefix=f"{V}/composite"),
             server.count(method="GET", path_prefix=f"{V}/search"))
    return result, tuple(b - a for a, b in zip(before, after, strict=True))


SOQLS = ["SELECT Id, LastName FROM Contact ORDER BY Id", "SELECT Id, Company FROM Lead ORDER BY Id",
         "SELECT Id, Name FROM Account ORDER BY Id", "SELECT Id, Email FROM User ORDER BY Id",
         "SELECT Id, Subject FROM Case ORDER BY Id", "SELECT Id FROM Task ORDER BY Id"]


def test_a_query_alone_goes_by_url(org_and_server):
    org, server = org_and_server
    rows, used = counted(server, lambda: org.queries(SOQLS[:1]))
    assert used == (1, 0, 0) and rows[0]


@pytest.mark.parametrize("n, composites", [(2, 1), (5, 1), (6, 2)])
def test_several_queries_go_in_composite_requests_of_five(org_and_server, n, composites):
    org, server = org_and_server
    alone = [org.query(q) for q in SOQLS[:n]]
    together, used = counted(server, lambda: org.queries(SOQLS[:n]))
    assert used == (0, composites, 0)
    assert together == alone  # the same rows, in the order asked


def test_searches_go_by_url_beside_queries(org_and_server):
    org, server = org_and_server
    _, used = counted(server, lambda: org.searches(["FIND {6175550143} IN PHONE FIELDS RETURNING Contact(Id, Phone)"] * 2))
    assert used == (0, 0, 2)

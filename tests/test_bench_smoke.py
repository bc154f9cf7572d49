"""CI smoke run of the benchmark (DESIGN §9): ``bench/run.py --smoke`` runs and prints its table.

It checks that the script works end to end (sandbox in its own process, the tool
in another, counters read back), never how fast the tool is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"^[\d,]+(\.\d+)?$")


def test_bench_smoke_prints_a_row_with_throughput_and_request_budgets(tmp_path):
    results = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--repeat", "2", "--results", str(results)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    lines = done.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("profile"))
    columns = re.split(r"\s{2,}", lines[head].strip())
    for name in ("calls/s", "Aircall req/1k", "Salesforce req/1k", "wall s", "peak RSS MiB"):
        assert name in columns, columns
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[head + 2:] if line.startswith("raw ")]
    row = dict(zip(columns, next(r for r in rows if r[1] == "task")))
    assert row["calls"] == "500" and row["result"] == "ok", row
    for name in ("calls/s", "Aircall req/1k", "Salesforce req/1k", "peak RSS MiB"):
        assert NUMBER.match(row[name]) and float(row[name].replace(",", "")) > 0, (name, row)

    # --results got the same table under a header naming the machine and the commit.
    text = results.read_text(encoding="utf-8")
    assert "## " in text and "cores" in text and "commit" in text
    assert lines[head] in text
    assert "the median of 2 runs" in done.stdout  # --repeat: the row is the median run, and says so


def test_bench_live_smoke_prints_delay_acknowledgement_and_day_budget_rows(tmp_path):
    """``--smoke --profile live``: a tiny live row (serve as a subprocess, fed by the emulator's webhooks)."""
    results = tmp_path / "results.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--profile", "live", "--results", str(results)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()

    def rows(first_column: str) -> list[dict[str, str]]:
        head = next(i for i, line in enumerate(lines) if line.startswith(first_column))
        columns = re.split(r"\s{2,}", lines[head].strip())
        out = []
        for line in lines[head + 2:]:
            if not line.startswith("live "):
                break
            out.append(dict(zip(columns, re.split(r"\s{2,}", line.strip()))))
        return out

    delays = {r["phase"]: r for r in rows("profile  mode  phase")}
    assert set(delays) == {"steady", "burst"}
    for row in delays.values():
        assert row["result"] == "ok", row
        assert NUMBER.match(row["p50 s"]) and NUMBER.match(row["max s"]), row
        assert row["Aircall req/call"] == "0.00", row  # the events carry the call: no Aircall request
        assert float(row["Salesforce req/call"]) > 0, row
    lone, loaded = rows("profile  mode  POSTs")
    assert lone["clients"] == "1" and lone["events stored"] == "20 of 20" and lone["duplicates"] == "0 of 0", lone
    assert loaded["clients"] == "4", loaded
    assert loaded["events stored"] == "180 of 180" and loaded["duplicates"] == "20 of 20", loaded
    for ack in (lone, loaded):
        assert ack["result"] == "ok" and ack["non-200"] == "0", ack
    [day] = rows("profile  mode  calls/day")
    assert int(day["reconcile Aircall req"]) >= 1 and int(day["cron Aircall req/day"].replace(",", "")) > 0, day
    assert "a day's Aircall requests at 600 calls/day" in done.stdout

    text = results.read_text(encoding="utf-8")
    assert "## " in text and "Live profile:" in text and "steal" in text

"""The command-line contract (DESIGN §3): help, exit codes and exact messages."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import Cli, write_settings
from typer.testing import CliRunner

from aircall_sync.cli import EXIT_CODES, app
from aircall_sync.errors import (
    AircallSyncError,
    CredentialsError,
    LockHeldError,
    RecordsFailedError,
    SettingsError,
    UsageError,
)

runner = CliRunner()
SHIPPED = {"init", "check", "calls", "backfill", "sync", "retry", "explain", "status", "serve", "replay", "sandbox",
           "demo", "webhooks"}
NOT_BUILT_YET: set[str] = set()


def test_every_command_has_help_text():
    names = set()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        names.add(name)
        assert (command.help or command.callback.__doc__ or "").strip(), f"{name} has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
    for group in app.registered_groups:
        names.add(group.name)
        assert (group.typer_instance.info.help or "").strip(), f"{group.name} has no help text"
        for command in group.typer_instance.registered_commands:
            assert (command.help or command.callback.__doc__ or "").strip(), f"{group.name} {command.name}: no help"
            result = runner.invoke(app, [group.name, command.name, "--help"])
            assert result.exit_code == 0, result.output
    assert names == SHIPPED


def test_commands_not_built_yet_are_absent_from_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == SHIPPED
    for name in NOT_BUILT_YET:
        assert runner.invoke(app, [name]).exit_code == 2


@pytest.mark.parametrize(
    "error, code",
    [(UsageError("x"), 2), (SettingsError(["x"]), 2), (RecordsFailedError("x"), 3), (LockHeldError("x"), 4),
     (CredentialsError("x"), 5), (AircallSyncError("x"), 1)],
)
def test_exit_code_table(error, code):
    from aircall_sync.cli import exit_code_for

    assert exit_code_for(error) == code
    assert any(isinstance(error, cls) for cls, _ in EXIT_CODES)


# ---------------------------------------------------------------- init


def test_init_writes_a_commented_private_file_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "settings.toml"
    result = runner.invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Wrote {target} ")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert "[aircall]" in target.read_text()

    target.write_text("# mine\n")
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2
    assert again.stderr == f"error: {target} already exists; use --force to overwrite it\n"
    assert target.read_text() == "# mine\n"

    forced = runner.invoke(app, ["init", str(target), "--force"])
    assert forced.exit_code == 0
    assert "[aircall]" in target.read_text()


def test_init_defaults_to_the_config_path(tmp_path):
    target = tmp_path / "conf.toml"
    result = runner.invoke(app, ["--config", str(target), "init"])
    assert result.exit_code == 0
    assert target.exists()


# ---------------------------------------------------------------- check


def test_check_reports_every_settings_problem_at_once(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(
        '[aircall]\napi_id = "x"\napi_token = "${NOPE_TOKEN}"\n'
        '[sync]\nlagg = "5m"\ntimezone = "Mars/Olympus"\n'
        '[salesforce.call_flow]\nmissed = "opn"\n'
    )
    result = runner.invoke(app, ["--config", str(path), "check"], env={"NOPE_TOKEN": ""})
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: 4 problem(s) in {path}:"
    joined = "\n".join(lines)
    for expected in (
        'sync.lagg: unknown key (did you mean "lag"?)',
        'salesforce.call_flow.missed: expected one of completed, open, skip, got "opn"',
        "sync.timezone",
    ):
        assert expected in joined
    assert "Traceback" not in result.output


def test_check_with_a_missing_file_says_how_to_create_one(tmp_path):
    path = tmp_path / "absent.toml"
    result = runner.invoke(app, ["--config", str(path), "check"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: 1 problem(s) in {path}:\n"
        f"  {path}: no such settings file; run `aircall-sync init` to create one, or pass --config PATH\n"
    )


def test_check_with_a_toml_syntax_error(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[aircall\napi_id = 1\n")
    result = runner.invoke(app, ["--config", str(path), "check"])
    assert result.exit_code == 2
    assert "line 1" in result.stderr and "TOML syntax error" in result.stderr


def test_check_against_the_sandbox(cli: Cli):
    result = cli("check")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"Settings: {cli.config} is valid.",
        f"Aircall: credentials accepted at {_base_url(cli)}.",
    ]
    assert lines[2].startswith("Salesforce: signed in to https://127.0.0.1:") and lines[2].endswith(" (token); mode task.")
    assert lines[3] == "  Person Accounts: enabled, searched too (R-SF-MATCH-1)"


def _base_url(cli: Cli) -> str:
    import tomllib

    return tomllib.loads(cli.config.read_text())["aircall"]["base_url"]


def test_check_with_refused_credentials_exits_5(cli: Cli, sandbox_settings, tmp_path):
    sandbox_settings["aircall"]["api_token"] = "wrong-token-value"
    path = write_settings(tmp_path / "bad.toml", sandbox_settings)
    result = cli("check", config=path)
    assert result.exit_code == 5
    assert result.stderr == (
        "error: Aircall refused the credentials (HTTP 401): check aircall.api_id and aircall.api_token "
        "(Dashboard > Integrations & API > API Keys)\n"
    )
    assert "wrong-token-value" not in result.output


def test_check_in_voice_mode_verifies_voicecall_and_says_what_it_cannot_do(cli: Cli, sandbox, sandbox_settings,
                                                                          tmp_path):
    """R-SFV-7 (VoiceCall createable) and R-SFV-6 (presence mapping is out of reach, said plainly)."""
    sandbox_settings["salesforce"].update(
        mode="voice", voice={"call_center_id": sandbox.salesforce.summary.call_center_id})
    path = write_settings(tmp_path / "voice.toml", sandbox_settings)
    result = cli("check", config=path)
    assert result.exit_code == 0, result.output
    assert "mode voice." in result.stdout
    assert "Omni-Channel presence mapping (R-SFV-6) is a live phone-app feature" in result.stdout
    assert "VoiceCall: createable" in result.stdout


# ---------------------------------------------------------------- calls: bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "2026-10-02", "--to", "2026-10-01"],
         "error: --from (2026-10-02) must be before --to (2026-10-01); swap them\n"),
        (["--from", "last week", "--to", "2026-10-01"],
         'error: --from: expected a date (YYYY-MM-DD) or an ISO-8601 date-time (2026-03-01T09:00), got "last week"\n'),
        (["--from", "2026-10-01", "--to", "2026-10-01", "--format", "csv"],
         'error: --format: expected one of table, jsonl, got "csv"\n'),
    ],
)
def test_calls_bad_input(cli: Cli, args, message):
    result = cli("calls", *args)
    assert result.exit_code == 2
    assert result.stderr == message
    assert result.stdout == ""


def test_calls_requires_from_and_to(cli: Cli):
    result = cli("calls", "--from", "2026-10-01")
    assert result.exit_code == 2
    assert "--to" in result.output


def test_verbose_and_quiet_conflict(cli: Cli):
    result = runner.invoke(app, ["--verbose", "--quiet", "--config", str(cli.config), "check"])
    assert result.exit_code == 2
    assert result.stderr == "error: --verbose and --quiet cannot be used together; pick one\n"


def test_log_format_is_checked(cli: Cli):
    result = runner.invoke(app, ["--log-format", "xml", "--config", str(cli.config), "check"])
    assert result.exit_code == 2
    assert result.stderr == 'error: --log-format: expected one of text, json, got "xml"\n'


def test_unknown_time_zone_in_settings_is_a_settings_error(cli: Cli, sandbox_settings, tmp_path):
    sandbox_settings["sync"]["timezone"] = "Europe/Atlantis"
    path = write_settings(tmp_path / "tz.toml", sandbox_settings)
    result = cli("calls", "--from", "2026-10-01", "--to", "2026-10-02", config=path)
    assert result.exit_code == 2
    assert "sync.timezone" in result.stderr and "Europe/Atlantis" in result.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com"])
def test_sandbox_serves_on_loopback_only(host):
    result = runner.invoke(app, ["sandbox", "--host", host])
    assert result.exit_code == 2
    assert result.stderr == (
        f'error: --host: the sandbox serves on loopback only (127.0.0.1, localhost or ::1), got "{host}"\n'
    )


def test_version():
    from aircall_sync import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"aircall-sync {__version__}\n"

"""``cancelkit demo`` / ``serve`` refuse options that cannot work, before starting anything.

A real provider without its API key, a session secret that is too short, or several
workers with no Redis to share runs through, is a usage error (exit status 2) with a
message naming what to set or install; never a fallback to a fake key, a weak secret
or workers that cannot see each other's runs, and never a server that starts and
then fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from cancelkit.demo import _workers
from cancelkit.demo._cli import main
from cancelkit.demo._serve import DemoConfigError, DemoOptions, _api_key, _secret

if TYPE_CHECKING:
    from pathlib import Path

KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CANCELKIT_SECRET")


def cancelkit(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would; it must give up at once (else: a timeout)."""
    environment = {k: v for k, v in os.environ.items() if k not in KEYS} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "cancelkit", *args, "--port", "0", "--data", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # it started serving instead of refusing
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize(
    ("provider", "variable"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY")]
)
@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_provider_without_its_key_refuses_to_start(
    tmp_path: Path, command: str, provider: str, variable: str
) -> None:
    result = cancelkit([command, "--provider", provider], tmp_path)
    assert result.returncode == 2, result.stdout
    assert f"--provider {provider} needs an API key: set {variable}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_blank_key_is_no_key(tmp_path: Path) -> None:
    result = cancelkit(["demo", "--provider", "openai"], tmp_path, OPENAI_API_KEY="  ")
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr


@pytest.mark.parametrize("where", ["environment", "option"])
def test_a_short_session_secret_refuses_to_start(tmp_path: Path, where: str) -> None:
    if where == "environment":
        result = cancelkit(["demo"], tmp_path, CANCELKIT_SECRET="short")
    else:
        result = cancelkit(["demo", "--secret", "short"], tmp_path)
    assert result.returncode == 2
    assert "CANCELKIT_SECRET" in result.stderr
    assert "at least 32 bytes, not 5" in result.stderr


def test_the_options_that_are_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    assert _secret(DemoOptions()) is None  # a random one per process, then
    monkeypatch.setenv("CANCELKIT_SECRET", "s" * 32)
    assert _secret(DemoOptions()) == b"s" * 32
    assert _secret(DemoOptions(secret="o" * 40)) == b"o" * 40  # the option wins
    assert _api_key(DemoOptions()) == "local"
    # A server of one's own at --base-url needs no key (say, `cancelkit model`).
    assert _api_key(DemoOptions(provider="openai", base_url="http://127.0.0.1:1/v1"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real")
    assert _api_key(DemoOptions(provider="anthropic")) == "sk-real"
    with pytest.raises(DemoConfigError, match="unknown provider"):
        _api_key(DemoOptions(provider="nope"))


@pytest.mark.parametrize(
    "flag",
    ["--max-runs", "--max-runs-per-session", "--max-run-seconds", "--max-body-bytes", "--workers"],
)
def test_limits_must_be_positive(tmp_path: Path, flag: str) -> None:
    result = cancelkit(["demo", flag, "0"], tmp_path)
    assert result.returncode == 2
    assert "must be positive" in result.stderr


def test_too_many_workers_refuse_to_start(tmp_path: Path) -> None:
    result = cancelkit(["demo", "--workers", "65"], tmp_path)
    assert result.returncode == 2
    assert "--workers is at most 64, not 65" in result.stderr


def test_workers_need_redis_or_a_redis_server_to_start() -> None:
    with pytest.raises(DemoConfigError, match="redis-server is not installed") as refused:
        _workers.check_redis(DemoOptions(workers=2), find=lambda: None)
    assert "apt-get install -y redis-server" in str(refused.value)
    assert "--redis URL" in str(refused.value)
    _workers.check_redis(DemoOptions(workers=2), find=lambda: "/usr/bin/redis-server")


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_workers_without_redis_server_is_a_usage_error(
    tmp_path: Path,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(_workers, "redis_server_binary", lambda: None)  # PATH without it
    args = [command, "--workers", "2", "--port", "0", "--data", str(tmp_path / "data")]
    if command == "serve":
        args += ["--base-url", "http://127.0.0.1:1"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "redis-server is not installed" in error
    assert "apt-get install -y redis-server" in error
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_an_unreachable_redis_refuses_to_start(tmp_path: Path) -> None:
    result = cancelkit(["demo", "--workers", "2", "--redis", "redis://127.0.0.1:1/0"], tmp_path)
    assert result.returncode == 2, result.stdout
    assert "cannot reach the Redis of --redis" in result.stderr
    assert "Traceback" not in result.stderr

"""``cancelkit demo`` / ``serve`` refuse options that cannot work, before starting anything.

A real provider without its API key, or a session secret that is too short, is a
usage error (exit status 2) with a message naming what to set; never a fallback to a
fake key or a weak secret, and never a server that starts and then fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

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
    "flag", ["--max-runs", "--max-runs-per-session", "--max-run-seconds", "--max-body-bytes"]
)
def test_limits_must_be_positive(tmp_path: Path, flag: str) -> None:
    result = cancelkit(["demo", flag, "0"], tmp_path)
    assert result.returncode == 2
    assert "must be positive" in result.stderr

"""Serving: loopback detection, the refusal to serve publicly without a token, the CLI."""

from __future__ import annotations

import pytest

from conveyor.cli import main
from conveyor.errors import ConfigurationError
from conveyor.web.server import check_exposure, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.10", False),
    ("example.com", False), ("", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_public_host_needs_a_token_or_insecure(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("CONVEYOR_API_TOKENS", raising=False)
    monkeypatch.delenv("CONVEYOR_API_READ_TOKENS", raising=False)
    with pytest.raises(ConfigurationError, match="without authentication"):
        check_exposure("0.0.0.0", None, None, insecure=False)
    check_exposure("127.0.0.1", None, None, insecure=False)
    check_exposure("0.0.0.0", ["t"], None, insecure=False)
    check_exposure("0.0.0.0", None, ["read-only"], insecure=False)
    with caplog.at_level("WARNING", logger="conveyor.web"):
        check_exposure("0.0.0.0", None, None, insecure=True)
    assert "WITHOUT authentication" in caplog.text
    monkeypatch.setenv("CONVEYOR_API_TOKENS", "from-env")
    check_exposure("0.0.0.0", None, None, insecure=False)


def test_conveyor_web_refuses_a_public_host_without_a_token(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CONVEYOR_API_TOKENS", raising=False)
    monkeypatch.delenv("CONVEYOR_API_READ_TOKENS", raising=False)
    code = main(["-A", "conveyor.demo:app", "--url", "memory://", "web", "--host", "0.0.0.0"])
    assert code == 2
    assert "refusing to serve the API on 0.0.0.0" in capsys.readouterr().err


def test_conveyor_web_is_a_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["web", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--token", "--read-token", "--insecure", "--cors-origin"):
        assert flag in out

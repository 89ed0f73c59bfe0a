"""need_tool: a missing system tool skips with the reason, except under CI=true where it fails."""

from __future__ import annotations

import pytest

from tests.ops.conftest import need_tool


def test_missing_tool_skips_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off CI, a missing promtool skips and names the Debian package to install."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
        need_tool("promtool")


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CI=true, a missing systemd-analyze is a failure, not a skip."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        need_tool("systemd-analyze")

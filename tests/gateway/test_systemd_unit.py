"""systemd/synapse-gateway.service: verified and rated by systemd-analyze, wired to the command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.ops.conftest import need_tool

UNIT = ROOT / "systemd" / "synapse-gateway.service"
MAX_EXPOSURE = 2.0


def installed_copy(tmp_path: Path) -> Path:
    """The unit with /opt/synapse/bin pointing at this venv, so its command exists."""
    target = tmp_path / "synapse-gateway.service"
    target.write_text(
        UNIT.read_text().replace("/opt/synapse/bin", str(Path(sys.executable).parent))
    )
    return target


def test_gateway_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the gateway unit with no warning."""
    tool = need_tool("systemd-analyze")
    done = subprocess.run(
        [tool, "verify", str(installed_copy(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).strip() == ""


def test_gateway_unit_exposure_at_most_two(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the gateway unit <= 2.0."""
    tool = need_tool("systemd-analyze")
    done = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_gateway_unit_loads_the_token_credential_the_command_reads() -> None:
    """The unit loads `gateway-token`, the credential name synapse-gateway looks for."""
    from synapse.gateway.settings import TOKEN_CREDENTIAL

    text = UNIT.read_text()
    assert f"LoadCredential={TOKEN_CREDENTIAL}:" in text
    assert "Type=notify" in text and "ExecStart=/opt/synapse/bin/synapse-gateway" in text
    env_example = (ROOT / "systemd" / "synapse-gateway.env.example").read_text()
    for name in ("SYNAPSE_GATEWAY_STREAMS", "SYNAPSE_GATEWAY_ALLOW_ORIGIN", "SYNAPSE_REDIS_URL"):
        assert name in env_example

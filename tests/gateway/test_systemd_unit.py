"""systemd/synapse-gateway.service: wired to the command (verified and rated with the router's)."""

from __future__ import annotations

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "synapse-gateway.service"


# verify and the exposure rating run for every shipped unit: tests/ops/test_systemd_unit.py


def test_gateway_unit_loads_the_token_credential_the_command_reads() -> None:
    """The unit loads `gateway-token`, the credential name synapse-gateway looks for."""
    from synapse.gateway.settings import TOKEN_CREDENTIAL

    text = UNIT.read_text()
    assert f"LoadCredential={TOKEN_CREDENTIAL}:" in text
    assert "Type=notify" in text and "ExecStart=/opt/synapse/bin/synapse-gateway" in text
    env_example = (ROOT / "systemd" / "synapse-gateway.env.example").read_text()
    for name in ("SYNAPSE_GATEWAY_STREAMS", "SYNAPSE_GATEWAY_ALLOW_ORIGIN", "SYNAPSE_REDIS_URL"):
        assert name in env_example

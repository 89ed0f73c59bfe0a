"""The embedded server's allocator: which one is chosen, that it really runs, the fallback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse import allocator
from synapse.embedded import EmbeddedServer, server_binary
from synapse.errors import SynapseError

MISSING: dict[str, Callable[[], Path | None]] = {"jemalloc": lambda: None, "mimalloc": lambda: None}


def present() -> list[str]:
    """The preloadable allocators this machine has (mimalloc ships as a dependency)."""
    return [name for name, find in allocator.FINDERS.items() if find() is not None]


def test_bundled_server_is_built_with_libc_malloc() -> None:
    """The bundled Valkey reports malloc=libc: the reason for the preload (if this changes,
    the preload is moot and the docs' allocator section is stale)."""
    assert allocator.built_with(server_binary()) == "libc"


def test_mimalloc_ships_with_synapse() -> None:
    """The cmeel-mimalloc dependency is installed and its library found: the no-root fallback."""
    assert "mimalloc" in present()


@pytest.mark.parametrize("name", ["jemalloc", "mimalloc"])
def test_embedded_server_runs_with_the_chosen_allocator(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SYNAPSE_SERVER_MALLOC=NAME: the library is mapped into the running server, which
    serves normally (a stream write and read back)."""
    if name not in present():
        pytest.skip(f"{name} not on this machine (jemalloc: Debian's libjemalloc2)")
    monkeypatch.setenv(allocator.ENV, name)
    with EmbeddedServer(tmp_path) as server:
        assert server.allocator == name
        library = allocator.FINDERS[name]()
        assert server.process is not None and library is not None
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert str(library.resolve()) in maps or str(library) in maps
        client = redis.Redis.from_url(server.url)
        try:
            client.xadd("s", {"k": "v" * 1000})
            assert client.xlen("s") == 1
        finally:
            client.close()


def test_default_is_the_first_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset (auto): jemalloc when the system has it, else mimalloc; the server runs with it."""
    monkeypatch.delenv(allocator.ENV, raising=False)
    with EmbeddedServer(tmp_path) as server:
        assert server.allocator == present()[0]


def test_libc_preloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNAPSE_SERVER_MALLOC=libc: nothing preloaded, the server runs as built."""
    monkeypatch.setenv(allocator.ENV, "libc")
    with EmbeddedServer(tmp_path) as server:
        assert server.preload == ("libc", None)
        assert server.allocator == "libc"
        assert server.process is not None
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "jemalloc" not in maps and "mimalloc" not in maps


def test_none_present_falls_back_to_libc() -> None:
    """auto with no allocator library on the machine: libc, nothing preloaded, no error."""
    assert allocator.choose(server_binary(), "auto", MISSING) == ("libc", None)


def test_named_but_missing_is_an_error() -> None:
    """A named allocator whose library is missing raises, instead of silently running libc."""
    with pytest.raises(SynapseError, match="jemalloc: its library was not found"):
        allocator.choose(server_binary(), "jemalloc", MISSING)


def test_unknown_name_is_an_error() -> None:
    """An allocator name Synapse does not know raises, naming the ones it does."""
    with pytest.raises(SynapseError, match="expected auto, libc or jemalloc, mimalloc"):
        allocator.choose(server_binary(), "tcmalloc")


def test_server_built_with_its_own_allocator_is_left_alone(tmp_path: Path) -> None:
    """A binary whose --version reports malloc=jemalloc gets no preload under auto."""
    fake = tmp_path / "fake-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=7.0.15 malloc=jemalloc-5.3.0 bits=64'\n")
    fake.chmod(0o755)
    found = {"jemalloc": lambda: tmp_path / "lib.so", "mimalloc": lambda: None}
    assert allocator.choose(str(fake), "auto", found) == ("jemalloc-5.3.0", None)


def test_a_library_the_loader_refuses_reads_as_libc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preload the dynamic loader cannot load (not a shared object) does not stop the server:
    it starts, serves, and reports libc, the allocator it really runs with."""
    bogus = tmp_path / "libbogus.so"
    bogus.write_text("not an ELF file\n")
    monkeypatch.setattr(allocator, "FINDERS", {"jemalloc": lambda: bogus})
    monkeypatch.setenv(allocator.ENV, "auto")
    with EmbeddedServer(tmp_path / "data") as server:
        assert server.preload == ("jemalloc", bogus)
        assert server.allocator == "libc"
        assert server.ping()


def test_child_env_keeps_an_inherited_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    """A preload already in our environment stays, after the allocator's library."""
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    env = allocator.child_env(Path("/x/libjemalloc.so.2"))
    assert env is not None and env["LD_PRELOAD"] == "/x/libjemalloc.so.2 /opt/other.so"
    assert allocator.child_env(None) is None

"""The container image, built with buildah and run for real against a Valkey on the host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis

from synapse.embedded import free_port
from tests.conftest import wait_sync
from tests.ops import image

TAG = "localhost/synapse-router-test"
#: What the image adds to its base: the venv with the wheel's runtime. Measured: 48 MB; the
#: single-stage image added 78 MB, mostly unstripped extensions (uvloop: 13 MB of debug info).
MAX_ADDED_BYTES = 60_000_000
#: A stripped uvloop extension is ~1.6 MB; the wheel's own is 13 MB.
MAX_UVLOOP_SO_BYTES = 4_000_000


def need_image_tools() -> None:
    """Skip with the reason when buildah, podman or debootstrap (or root) is missing; under
    CI=true fail instead, since .ci/run installs them."""
    why = image.tools_missing()
    if why:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}; CI=true needs the container test")
        pytest.skip(why)


@pytest.fixture(scope="module")
def built() -> str:
    """The image, built from the repository (skips without buildah, fails when CI=true)."""
    need_image_tools()
    image.build(TAG)
    return TAG


def test_missing_buildah_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without buildah the image tests skip naming the packages, and fail when CI=true."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install buildah podman debootstrap"):
        need_image_tools()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the container test"):
        need_image_tools()


@pytest.fixture
def container(built: str) -> Iterator[str]:
    """A working container of the image; removed afterwards."""
    name = f"synapse-test-{os.getpid()}-{time.monotonic_ns()}"
    image.run("buildah", "from", "--pull=never", "--name", name, built)
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True, timeout=60)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_image_ships_a_stripped_venv_without_pip(container: str) -> None:
    """The runtime venv has no pip and its extensions are stripped (uvloop ~1.6 MB, not 13)."""
    probe = (
        "import importlib.util, pathlib, sys, uvloop; "
        "so = next(pathlib.Path(uvloop.__file__).parent.glob('loop.*.so')); "
        "print(sys.prefix, importlib.util.find_spec('pip') is None, so.stat().st_size)"
    )
    out = image.run("buildah", "run", "--isolation", "chroot", container, "python", "-c", probe)
    prefix, no_pip, so_bytes = out.split()
    assert prefix == "/opt/synapse" and no_pip == "True"
    assert int(so_bytes) < MAX_UVLOOP_SO_BYTES


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_image_is_small_and_keeps_its_healthcheck(built: str) -> None:
    """The image adds only the runtime venv to its base, runs as uid 10001, keeps HEALTHCHECK."""
    config = json.loads(image.run("buildah", "inspect", "--type", "image", built))
    docker = config["Docker"]["config"]
    assert docker["User"] == "10001:10001"
    assert docker["Entrypoint"] == ["synapse-router"]
    assert "/readyz" in " ".join(docker["Healthcheck"]["Test"])
    added = image.size_bytes(built) - image.size_bytes(image.base_name())
    print(f"image {image.size_bytes(built) / 1e6:.0f} MB, {added / 1e6:.0f} MB over its base")
    assert 0 < added < MAX_ADDED_BYTES


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_containerised_router_routes_and_passes_its_healthcheck(
    container: str, url: str, r: redis.Redis
) -> None:
    """The router in the image reaches the host's Valkey, routes an event; /readyz and the
    image's own HEALTHCHECK command pass."""
    port = free_port()
    env = ["--env", f"SYNAPSE_REDIS_URL={url}", "--env", f"SYNAPSE_METRICS_ADDR=127.0.0.1:{port}"]
    proc = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", *env, container, "synapse-router"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_sync(lambda: readyz(port) == 200 or proc.poll() is not None, 120, "/readyz")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        body = {"model_id": "m1", "version": "1.0.0", "stage": "staging"}
        source_id = r.xadd("ingress", {"type": "model.updated", "data": json.dumps(body)})
        wait_sync(lambda: r.xlen("model-events") == 1, 30, "the routed copy")
        [(_, fields)] = r.xrange("model-events")
        assert fields[b"synapse-id"] == source_id and fields[b"synapse-route"] == b"models"
        test = json.loads(image.run("buildah", "inspect", "--type", "image", TAG))["Docker"][
            "config"
        ]["Healthcheck"]["Test"]
        assert test[0] == "CMD"
        command = [part.replace(":9464/", f":{port}/") for part in test[1:]]
        check = ["buildah", "run", "--isolation", "chroot", container, *command]
        assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    # the HEALTHCHECK fails once the router is gone
    check = ["buildah", "run", "--isolation", "chroot", container, *command]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode != 0

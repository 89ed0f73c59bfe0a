"""Build the Dockerfile for real with buildah (chroot isolation), on a base image made here.

No image registry is reachable on the test machines, so the Dockerfile's ``FROM`` image is made
locally: ``debootstrap --variant=minbase`` of Debian bookworm with Python 3 and pip, without the
EXTERNALLY-MANAGED marker (the official python image has none), imported with ``podman import``
and tagged with the ``FROM`` name. That base is cached between runs on one machine: the rootfs
tarball under ``$XDG_CACHE_HOME/synapse/images`` (else ``~/.cache``), keyed by the ``FROM`` name
and the recipe, and the image itself in podman's storage. Only chroot isolation works here (crun
refuses: cgroups in hybrid mode), and pip inside the build needs the host's CA bundle.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
PACKAGES = "python3,python3-pip,python-is-python3,python3-venv,ca-certificates"
SUITE = "bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def base_name() -> str:
    """The image the Dockerfile starts from (its first ``FROM``)."""
    match = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no FROM"
    return match.group(1)


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "synapse" / "images"


def run(*args: str, timeout_s: float = 300) -> str:
    """Run a command; its stdout, or an AssertionError with its output."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    why = f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, why
    return done.stdout


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], timeout=60).returncode == 0


def ensure_base() -> str:
    """The Dockerfile's base image in podman's storage: cached, else imported, else made."""
    name = base_name()
    if image_exists(name):
        return name
    key = hashlib.sha256(f"{name} {SUITE} {PACKAGES}".encode()).hexdigest()[:12]
    tarball = cache_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                SUITE,
                str(rootfs),
                timeout_s=480,
            )
            for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
                marker.unlink()
            partial = Path(tmp) / "base.tar"
            run("tar", "-C", str(rootfs), "-cf", str(partial), ".", timeout_s=120)
            partial.replace(tarball)
    run("podman", "import", str(tarball), name, timeout_s=180)
    return name


def build(tag: str) -> None:
    """``buildah bud`` the repository's Dockerfile as ``tag`` (docker format keeps HEALTHCHECK)."""
    ensure_base()
    run(
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--format",
        "docker",
        "--layers",
        "-v",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "-t",
        tag,
        str(ROOT),
        timeout_s=420,
    )


def size_bytes(image: str) -> int:
    return int(run("podman", "image", "inspect", "--format", "{{.Size}}", image).strip())


def tools_missing() -> str | None:
    """Why the image cannot be built here, or None."""
    missing = [t for t in ("buildah", "podman", "debootstrap") if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})"
    if os.geteuid() != 0:
        return "building the base image with debootstrap needs root"
    return None

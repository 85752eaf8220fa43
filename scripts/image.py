"""`make image`: the container image, built by podman from the Containerfile.

Two things a machine may lack are made here rather than assumed:
- the base image. When no registry answers, `debian:bookworm-slim` is built with
  debootstrap (--variant=minbase) from the apt sources this machine already uses and
  tagged under that name, so the Containerfile is the same everywhere;
- the package index. pip inside the build uses this machine's pip configuration (index,
  extra indexes, local wheel folders, CA file), mounted for the build's steps only: nothing
  of it lands in the image, and no host name is written into the repository.

Usage: python scripts/image.py IMAGE [--base debian:bookworm-slim] [--target runtime|full]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The pip settings worth carrying into the build; the rest (timeouts, constraints) stay here.
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "cert", "trusted-host")


def run(*command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it, and fail loudly if it fails."""
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def image_exists(name: str) -> bool:
    """Whether podman has this image locally."""
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def apt_mirror() -> str:
    """The first Debian mirror in this machine's apt sources (not the security one)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for file in files:
        try:
            text = file.read_text()
        except OSError:
            continue
        for url in re.findall(r"^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.MULTILINE):
            if url.startswith("http") and "security" not in url:
                return url
    sys.exit("image: no Debian mirror in /etc/apt/sources.list(.d); cannot build the base image")


def build_base(name: str) -> None:
    """debian:<suite>-slim from debootstrap --variant=minbase, cleaned of apt's caches and docs, imported under `name`."""
    suite = name.rsplit(":", 1)[-1].removesuffix("-slim")
    if shutil.which("debootstrap") is None:
        sys.exit("image: no registry answers and debootstrap is missing (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="smls-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run("debootstrap", "--variant=minbase", suite, str(rootfs), apt_mirror(), stdout=subprocess.DEVNULL)
        for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
            for item in (rootfs / junk).glob("*"):
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                elif item.name != "lock":
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import", "--change", 'CMD ["bash"]', "-", name, stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            sys.exit("image: tar of the base's root filesystem failed")


def ensure_base(name: str) -> None:
    """The base image: already here, else pulled, else built with debootstrap."""
    if image_exists(name):
        return
    if subprocess.run(["timeout", "120", "podman", "pull", "-q", name]).returncode == 0:
        return
    print(f"image: {name} cannot be pulled; building it with debootstrap", flush=True)
    build_base(name)


def pip_settings() -> dict[str, str]:
    """This machine's effective pip settings that say where packages come from (`pip config list`)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        short = key.rsplit(".", 1)[-1]
        if short in PIP_KEYS:
            found[short] = value.strip().strip("'\"")  # later files win, as in pip
    return found


def pip_mounts(settings: dict[str, str], folder: Path) -> tuple[list[str], str]:
    """Volumes for the build's pip (local indexes and wheel folders at their own paths, the CA file) and its pip.conf's text."""
    volumes: list[str] = []
    lines = ["[global]"]
    for key, value in settings.items():
        if key == "cert":
            shutil.copy(value, folder / "ca.crt")
            value = "/run/smls-pip/ca.crt"
        else:
            for item in value.split():
                local = item.removeprefix("file://")
                if local.startswith("/") and Path(local).exists():
                    # An index's pages link to files beside its folder (../../files/...): its parent.
                    top = Path(local).parent if key.endswith("index-url") or not Path(local).is_dir() else Path(local)
                    volumes += ["--volume", f"{top}:{top}:ro"]
        lines.append(f"{key} = {value}")
    return volumes, "\n".join(lines) + "\n"


def main() -> int:
    """Build the image."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--base", default="debian:bookworm-slim")
    parser.add_argument("--target", default="runtime", choices=("runtime", "full"))
    args = parser.parse_args()
    ensure_base(args.base)
    with tempfile.TemporaryDirectory(prefix="smls-pip-") as tmp:
        volumes, conf = pip_mounts(pip_settings(), Path(tmp))
        (Path(tmp) / "pip.conf").write_text(conf)
        Path(tmp).chmod(0o755)
        run("podman", "build", "--network", "host", "--file", "Containerfile", "--target", args.target,
            "--build-arg", f"BASE={args.base}", "--build-arg", "PIP_CONFIG_FILE=/run/smls-pip/pip.conf",
            "--volume", f"{tmp}:/run/smls-pip:ro", *volumes, "--tag", args.image, ".", cwd=ROOT)
    size = run("podman", "image", "inspect", "--format", "{{.Size}}", args.image, capture_output=True).stdout.strip()
    print(f"image: {args.image}, {int(size) / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

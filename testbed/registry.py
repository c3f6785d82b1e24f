"""A real OCI registry for tests and benchmarks, and images built here to put in it.

`Registry` runs Debian's `docker-registry` (the distribution project's reference registry)
on a free loopback port with its own storage, plain HTTP, optionally behind htpasswd basic
auth, and reads its access log so a test can count what was downloaded. `build_image` makes
an image with umoci from a tiny root file system (a static busybox and its links, or none),
and `Registry.push` uploads it with skopeo; `push_index` adds a multi-platform index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "id", "env", "true", "pwd", "touch", "mkdir")
TIMEOUT = 60.0
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>/v2/\S*) HTTP/[\d.]+" (?P<status>\d{3})')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Request:
    method: str
    uri: str
    status: int


@dataclass(frozen=True)
class Pushed:
    """An image in the registry: `name:tag` and its manifest's digest and size."""

    name: str
    tag: str
    digest: str
    size: int


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port>; `stop()` removes its storage."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="baro-registry-"))
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.user, self.password = user, password
        self.log_path = self.dir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise RuntimeError("docker-registry is not installed; run scripts/install")
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.dir / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        if self.user is not None:
            htpasswd = self.dir / "htpasswd"
            assert self.password is not None
            line = subprocess.run(
                ["htpasswd", "-nbB", self.user, self.password],
                check=True,
                capture_output=True,
                timeout=TIMEOUT,
            ).stdout
            htpasswd.write_bytes(line)
            config["auth"] = {"htpasswd": {"realm": "baro-test", "path": str(htpasswd)}}
        (self.dir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [exe, "serve", str(self.dir / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                status = httpx.get(f"http://{self.host}/v2/", timeout=2).status_code
                if status in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=TIMEOUT)
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- what it served ----------------------------------------------------------------

    def requests(self) -> list[Request]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [Request(m["method"], m["uri"], int(m["status"])) for m in _ACCESS.finditer(text)]

    def blob_downloads(self, name: str) -> int:
        """Successful layer and config downloads of repository `name`."""
        prefix = f"/v2/{name}/blobs/"
        return sum(
            1
            for r in self.requests()
            if r.method == "GET" and r.uri.startswith(prefix) and r.status == 200
        )

    # ---- filling it --------------------------------------------------------------------

    def _auth_file(self, workdir: Path) -> list[str]:
        if self.user is None:
            return []
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        path = workdir / "push-auth.json"
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        path.chmod(0o600)
        return ["--dest-authfile", str(path)]

    def push(self, layout: Path, name: str, tag: str) -> Pushed:
        """Upload the image tagged `image` in the OCI layout `layout` as `name:tag`."""
        _run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                *self._auth_file(layout.parent),
                f"oci:{layout}:image",
                f"docker://{self.host}/{name}:{tag}",
            ]
        )
        raw = self.manifest(name, tag)
        return Pushed(name, tag, "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))

    def manifest(self, name: str, reference: str) -> bytes:
        accept = ", ".join(
            [
                OCI_INDEX,
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ]
        )
        response = httpx.get(
            f"http://{self.host}/v2/{name}/manifests/{reference}",
            headers={"Accept": accept},
            auth=self._basic(),
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        return response.content

    def push_index(self, name: str, tag: str, entries: Sequence[tuple[Pushed, str]]) -> str:
        """Tag an OCI index of already pushed manifests, each with its `os/arch[/variant]`."""
        manifests = []
        for pushed, plat in entries:
            os_, arch, *variant = plat.split("/")
            platform: dict[str, str] = {"os": os_, "architecture": arch}
            if variant:
                platform["variant"] = variant[0]
            manifests.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": pushed.digest,
                    "size": pushed.size,
                    "platform": platform,
                }
            )
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        response = httpx.put(
            f"http://{self.host}/v2/{name}/manifests/{tag}",
            content=body.encode(),
            headers={"Content-Type": OCI_INDEX},
            auth=self._basic(),
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()

    def _basic(self) -> httpx.BasicAuth | None:
        if self.user is None or self.password is None:
            return None
        return httpx.BasicAuth(self.user, self.password)


def busybox() -> Path:
    """The static busybox (Debian's busybox-static): it runs in a root with no libc."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:8192]:
            return path
    raise RuntimeError("a static busybox is needed: apt-get install busybox-static")


def build_image(
    workdir: Path,
    *,
    files: Mapping[str, bytes] | None = None,
    shell: bool = True,
    architecture: str = "amd64",
    env: Sequence[str] = ("PATH=/bin",),
    working_dir: str | None = None,
    user: str | None = None,
    prepare: Callable[[Path], None] | None = None,
) -> Path:
    """An OCI layout under `workdir` holding one image tagged `image`: busybox with links
    in /bin (unless `shell` is False: then no /bin/sh at all) plus `files`; `prepare` may
    change the root file system further before it is packed."""
    layout = workdir / f"layout-{os.urandom(4).hex()}"
    bundle = workdir / f"bundle-{os.urandom(4).hex()}"
    _run(["umoci", "init", "--layout", str(layout)])
    _run(["umoci", "new", "--image", f"{layout}:image"])
    _run(["umoci", "unpack", "--rootless", "--image", f"{layout}:image", str(bundle)])
    root = bundle / "rootfs"
    (root / "bin").mkdir()
    if shell:
        shutil.copy2(busybox(), root / "bin" / "busybox")
        for applet in BUSYBOX_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
    for rel, data in (files or {}).items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if prepare is not None:
        prepare(root)
    _run(["umoci", "repack", "--image", f"{layout}:image", str(bundle)])
    config = ["umoci", "config", "--image", f"{layout}:image", "--architecture", architecture]
    for item in env:
        config += ["--config.env", item]
    if working_dir is not None:
        config += ["--config.workingdir", working_dir]
    if user is not None:
        config += ["--config.user", user]
    config += ["--config.entrypoint", "/bin/false"]  # must be ignored by the runner
    _run(config)
    _run(["umoci", "gc", "--layout", str(layout)])
    shutil.rmtree(bundle)
    return layout


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, timeout=TIMEOUT * 5, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")


__all__ = ["BUSYBOX_APPLETS", "Pushed", "Registry", "Request", "build_image", "busybox"]

"""Unpacked OCI images on a runner, one per manifest digest, shared by its processes.

    <data_dir>/images/sha256-<hex>/rootfs       the image's root file system (read-only root)
    <data_dir>/images/sha256-<hex>/image.json   digest, name, size, config
    <data_dir>/images/sha256-<hex>.lock         shared while a run uses it, exclusive to remove
                                                it; its mtime is the image's last use
    <data_dir>/images/sha256-<hex>.pull         exclusive while one process pulls it
    <data_dir>/images/.sha256-<hex>.tmp-<rand>  a pull in progress (layout + rootfs)
    <data_dir>/images/tags/<hash>.json          the digest a tag had when last resolved
    <data_dir>/images/auth.json                 registry credentials for skopeo (0600)

A tag is resolved to the digest of its manifest for this runner's platform on every `use`
(one small request); an image is pulled and unpacked only when that digest is not here yet,
by one process while the others wait on its `.pull` lock. The unpacked root is renamed into
place whole, so a reader sees all of it or nothing. The layout skopeo downloads into is
dropped after unpacking: keeping compressed layers beside the root would double the disk an
image costs, and the cap is about what runs.

All unpacked images together stay under a byte cap: before a new one is renamed in, unused
ones go, least recently used first. An image is unused when its `.lock` can be taken
exclusively; `use` holds it shared for as long as the caller's block runs. Lock files are
checked after locking to still be the file at their path, so a sweep may delete the lock
files of images that are gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from runner.images.errors import (
    DiskFull,
    NoPlatform,
    PullFailed,
    RegistryUnreachable,
    TooLarge,
)
from runner.images.reference import (
    ImageRef,
    check_mirror,
    check_registry_host,
    parse_reference,
)
from runner.images.rootfs import check_shell, make_mount_points, sanitize
from runner.images.tools import ToolFailure, explain, run_tool, tool_env

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

GiB = 1024**3
INSPECT_TIMEOUT_SECONDS = 120.0
TAG_TTL_SECONDS = 300.0
"""A tag resolved this recently is not asked again: every command of a run uses the image,
and Docker Hub counts each manifest request against its pull rate limit."""
ORPHAN_LOCK_SECONDS = 3600.0
"""A lock file whose image is gone is deleted after this long (a puller may be about to use it)."""
_INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
_DIR = re.compile(r"(sha256|sha512)-([0-9a-f]{64}|[0-9a-f]{128})")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    """The platform this runner executes, as OCI names it."""
    machine = platform.machine().lower()
    if machine.startswith("armv7"):
        return Platform("linux", "arm", "v7")
    return Platform("linux", _ARCH.get(machine, machine))


@dataclass(frozen=True)
class ImageOptions:
    """The image store's share of the runner settings."""

    max_bytes: int = 20 * GiB
    idle_seconds: float = 7 * 86400.0
    pull_timeout: float = 900.0
    inspect_timeout: float = INSPECT_TIMEOUT_SECONDS
    tag_ttl: float = TAG_TTL_SECONDS
    mirrors: Mapping[str, str] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()
    credentials: Mapping[str, SecretStr] = field(default_factory=dict)
    platform: Platform = field(default_factory=host_platform)
    skopeo: str = "skopeo"
    umoci: str = "umoci"

    def __post_init__(self) -> None:
        for host, target in self.mirrors.items():
            check_registry_host(host)
            check_mirror(target)
        for host in self.insecure:
            check_registry_host(host)
        for host, secret in self.credentials.items():
            check_registry_host(host)
            user, colon, password = secret.get_secret_value().partition(":")
            if not (user and colon and password):
                raise ValueError(f"credentials for registry {host} must be user:password")

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageOptions:
        return cls(
            max_bytes=settings.image_cache_max_bytes,
            idle_seconds=settings.image_idle_days * 86400,
            pull_timeout=settings.image_pull_timeout_seconds,
            mirrors={check_registry_host(h): t for h, t in settings.image_registry_mirrors.items()},
            insecure=frozenset(check_registry_host(h) for h in settings.image_insecure_registries),
            credentials={
                check_registry_host(h): s for h, s in settings.image_registry_credentials.items()
            },
        )


@dataclass(frozen=True)
class ImageConfig:
    """What the image says about how to run it (its Entrypoint and Cmd are ignored)."""

    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Image:
    """An unpacked image, usable as a read-only root while its `use` block runs."""

    reference: str
    """The name asked for, normalised (`docker.io/library/node:22`)."""
    digest: str
    """The manifest digest for this runner's platform: what is cached and what ran."""
    rootfs: Path
    size_bytes: int
    config: ImageConfig
    pulled: bool
    """Whether this `use` downloaded it (False: it was here already)."""


@dataclass(frozen=True)
class Source:
    """Where a reference is pulled from (after the operator's mirror settings)."""

    host: str
    name: str
    insecure: bool
    has_credentials: bool

    def transport(self, ref: ImageRef, digest: str | None = None) -> str:
        if digest is not None:
            return f"docker://{self.name}@{digest}"
        if ref.digest is not None:
            return f"docker://{self.name}@{ref.digest}"
        return f"docker://{self.name}:{ref.tag or 'latest'}"


@dataclass(frozen=True)
class Resolved:
    ref: ImageRef
    source: Source
    digest: str
    compressed_bytes: int | None


@dataclass
class SweptImages:
    """What one housekeeping pass removed."""

    images: list[Path] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.images or self.partial or self.locks)


class ImageStore:
    """Images under `<data_dir>/images`; one instance per runner process (any number of
    processes may share the directory)."""

    def __init__(self, data_dir: Path, options: ImageOptions | None = None) -> None:
        self.options = options or ImageOptions()
        self.root = data_dir / "images"
        if ":" in str(self.root):
            raise ValueError(f"the image store path may not contain ':' ({self.root})")
        self.auth_file = self.root / "auth.json"
        self._home = self.root / "home"
        self._tmp = self.root / "tmp"
        self._registries_conf = self.root / "registries.conf"
        # The store's own registries.d: no host-wide signature lookaside (root's default is
        # /var/lib/containers/sigstore, unreadable in a user namespace and not ours to read).
        self._registries_d = self.root / "registries.d"
        self._prepared = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageStore:
        return cls(settings.runner_data_dir, ImageOptions.from_settings(settings))

    # ---- the API ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, reference: str) -> AsyncIterator[Image]:
        """The image `reference` names, pulled and unpacked if this runner does not have its
        current digest yet; it stays on disk at least until the block ends."""
        resolved = await self.resolve(reference)
        fd, image = await self._acquire(resolved)
        try:
            yield image
        finally:
            with contextlib.suppress(OSError):
                os.utime(self._lock_path(resolved.digest))
            os.close(fd)

    async def resolve(self, reference: str) -> Resolved:
        """The digest `reference` stands for on this runner's platform. A digest reference
        already unpacked here needs no network, nor does a tag resolved in the last
        `tag_ttl` seconds (by any process); an unreachable registry falls back to the digest
        a tag last had, if it is still here."""
        ref = parse_reference(reference)
        try:
            self._prepare()
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"the runner's disk is full: cannot store image {ref}") from None
            raise
        source = self.source(ref)
        if ref.digest is not None:
            if self._is_unpacked(ref.digest):
                return Resolved(ref, source, ref.digest, None)
            return await self._resolve(ref, source)
        known = self._known_digest(ref, source)
        if known is not None and time.time() - known[1] <= self.options.tag_ttl:
            return Resolved(ref, source, known[0], None)
        try:
            resolved = await self._resolve(ref, source)
        except RegistryUnreachable as exc:
            if known is None:
                raise
            log.warning("%s; using the digest it last had, %s", exc, known[0])
            return Resolved(ref, source, known[0], None)
        self._remember(resolved)
        return resolved

    async def _resolve(self, ref: ImageRef, source: Source) -> Resolved:
        raw = await self._inspect(ref, source)
        top = _digest_of(raw, ref.digest)
        if ref.digest is not None and top != ref.digest:
            raise PullFailed(
                f"registry {source.host} sent a manifest for {ref} with another digest"
            )
        doc = _json(raw, ref)
        if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
            child = self._choose(doc, ref)
            if self._is_unpacked(child):
                return Resolved(ref, source, child, None)
            raw = await self._inspect(ref, source, child)
            if _digest_of(raw, child) != child:
                raise PullFailed(
                    f"registry {source.host} sent a manifest for {ref} with another digest"
                )
            doc = _json(raw, ref)
            top = child
        layers = doc.get("layers")
        size = (
            sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))
            if isinstance(layers, list)
            else None
        )
        return Resolved(ref, source, top, size)

    def _tag_file(self, ref: ImageRef, source: Source) -> Path:
        key = f"{source.name}:{ref.tag}\n{self.options.platform}"
        return self.root / "tags" / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"

    def _known_digest(self, ref: ImageRef, source: Source) -> tuple[str, float] | None:
        """The digest this tag had when last resolved here, and when, if still unpacked."""
        path = self._tag_file(ref, source)
        try:
            memo = json.loads(path.read_text())
            digest, at = str(memo["digest"]), float(memo["at"])
        except (OSError, ValueError, LookupError, TypeError):
            return None
        return (digest, at) if self._is_unpacked(digest) else None

    def _remember(self, resolved: Resolved) -> None:
        path = self._tag_file(resolved.ref, resolved.source)
        memo = {"reference": str(resolved.ref), "digest": resolved.digest, "at": time.time()}
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _write_private(path, json.dumps(memo).encode())
        except OSError as err:  # only an optimisation: the next use asks the registry
            log.warning("cannot record the digest of %s: %s", resolved.ref, err)

    def source(self, ref: ImageRef) -> Source:
        target = self.options.mirrors.get(ref.registry)
        if target is None:
            host, name = ref.registry, ref.name
        else:
            host, prefix = check_mirror(target)
            name = f"{host}/{prefix}/{ref.repository}" if prefix else f"{host}/{ref.repository}"
        return Source(
            host=host,
            name=name,
            insecure=host in self.options.insecure,
            has_credentials=host in self.options.credentials,
        )

    def cached(self) -> list[Path]:
        """The unpacked images' directories (for the tests and the log)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _DIR.fullmatch(p.name) and p.is_dir())

    def sweep(self, *, now: float | None = None) -> SweptImages:
        """Housekeeping (blocking: run it in a thread): pulls that died, images idle longer
        than the idle limit, the cap, lock files of images that are gone."""
        return sweep_images(
            self.root,
            max_idle_seconds=self.options.idle_seconds,
            max_bytes=self.options.max_bytes,
            now=now,
        )

    # ---- pulling -----------------------------------------------------------------------

    async def _acquire(self, resolved: Resolved) -> tuple[int, Image]:
        name = _dir_name(resolved.digest)
        pull_fd = await _lock(self.root / f"{name}.pull", fcntl.LOCK_EX)
        try:
            use_fd = await _lock(self._lock_path(resolved.digest), fcntl.LOCK_SH)
            try:
                pulled = False
                if not self._is_unpacked(resolved.digest):
                    await self._pull(resolved)
                    pulled = True
                os.utime(self._lock_path(resolved.digest))
                return use_fd, self._load(resolved, pulled)
            except BaseException:
                os.close(use_fd)
                raise
        finally:
            os.close(pull_fd)

    async def _pull(self, resolved: Resolved) -> None:
        ref, source, digest = resolved.ref, resolved.source, resolved.digest
        cap = self.options.max_bytes
        if resolved.compressed_bytes is not None and resolved.compressed_bytes > cap:
            raise TooLarge(
                f"image {ref} is too large for this runner: its layers alone are"
                f" {_mb(resolved.compressed_bytes)} compressed, the image cache holds {_mb(cap)}"
            )
        name = _dir_name(digest)
        tmp = self.root / f".{name}.tmp-{secrets.token_hex(4)}"
        try:
            if resolved.compressed_bytes:
                # Room for the download at least; the unpacked size is known only later.
                await asyncio.to_thread(
                    _held_make_room, self.root, resolved.compressed_bytes, cap, name
                )
            tmp.mkdir(mode=0o700)
            layout = tmp / "layout"
            target = tmp / "image"
            target.mkdir(mode=0o711)
            copy = [
                *self._skopeo(),
                "--insecure-policy",
                "copy",
                "--quiet",
                "--retry-times",
                "2",
            ]
            if source.insecure:
                copy.append("--src-tls-verify=false")
            copy += ["--authfile", str(self.auth_file)]
            # By digest: exactly the manifest `resolve` chose, whatever the tag says by now.
            copy += [source.transport(ref, digest), f"oci:{layout}:image"]
            await self._run(copy, ref, source)
            config = _read_config(layout, ref, self.options.platform)
            unpack = [self.options.umoci, "raw", "unpack", "--rootless"]
            unpack += ["--image", f"{layout}:image", str(target / "rootfs")]
            await self._run(unpack, ref, source)
            await asyncio.to_thread(shutil.rmtree, layout)
            rootfs = target / "rootfs"
            size = await asyncio.to_thread(sanitize, rootfs)
            check_shell(rootfs, str(ref))
            make_mount_points(rootfs)
            if size > cap:
                raise TooLarge(
                    f"image {ref} is too large for this runner: {_mb(size)} unpacked, the image"
                    f" cache holds {_mb(cap)}"
                )
            meta = {
                "digest": digest,
                "reference": str(ref),
                "size": size,
                "config": config,
                "pulled_at": time.time(),
            }
            (target / "image.json").write_text(json.dumps(meta, indent=1) + "\n")
            freed = await asyncio.to_thread(_place, self.root, target, name, size, cap)
            if freed:
                log.info("image cache: removed %d unused images to fit %s", len(freed), ref)
            log.info("pulled image %s (%s, %s)", ref, digest, _mb(size))
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"the runner's disk is full: cannot store image {ref}") from None
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def _inspect(self, ref: ImageRef, source: Source, digest: str | None = None) -> bytes:
        argv = [*self._skopeo(), "inspect", "--raw", "--retry-times", "2"]
        if source.insecure:
            argv.append("--tls-verify=false")
        argv += ["--authfile", str(self.auth_file), source.transport(ref, digest)]
        return await self._run(argv, ref, source, timeout=self.options.inspect_timeout)

    def _skopeo(self) -> list[str]:
        """skopeo with the store's own configuration directories, never the host's."""
        return [self.options.skopeo, "--registries.d", str(self._registries_d)]

    async def _run(
        self, argv: list[str], ref: ImageRef, source: Source, *, timeout: float | None = None
    ) -> bytes:
        env = tool_env(
            os.environ,
            home=str(self._home),
            tmpdir=str(self._tmp),
            registries_conf=str(self._registries_conf),
        )
        try:
            return await run_tool(argv, env=env, timeout=timeout or self.options.pull_timeout)
        except ToolFailure as failure:
            error = explain(failure, ref, source.host, has_credentials=source.has_credentials)
            log.warning("%s (%s)", error, failure.last_line())
            raise error from None
        except FileNotFoundError:
            raise PullFailed(f"the runner cannot pull images: {argv[0]} is not installed") from None

    def _choose(self, index: dict[str, Any], ref: ImageRef) -> str:
        want = self.options.platform
        offered: list[str] = []
        best: tuple[int, str] | None = None
        for entry in index.get("manifests") or []:
            if not isinstance(entry, dict):
                continue
            plat = entry.get("platform") or {}
            os_, arch, variant = plat.get("os"), plat.get("architecture"), plat.get("variant")
            if os_ in (None, "unknown") or not isinstance(entry.get("digest"), str):
                continue  # attestations and the like
            offered.append("/".join(p for p in (os_, arch, variant) if p))
            if os_ != want.os or arch != want.architecture:
                continue
            rank = 0 if variant == want.variant else 1 if not variant or variant == "v8" else 2
            if best is None or rank < best[0]:
                best = (rank, entry["digest"])
        if best is None:
            has = ", ".join(sorted(set(offered))) or "none"
            raise NoPlatform(f"image {ref} has no {want} variant (it has: {has})")
        return best[1]

    def _load(self, resolved: Resolved, pulled: bool) -> Image:
        final = self.root / _dir_name(resolved.digest)
        meta = json.loads((final / "image.json").read_text())
        config = meta.get("config") or {}
        return Image(
            reference=str(resolved.ref),
            digest=resolved.digest,
            rootfs=final / "rootfs",
            size_bytes=int(meta.get("size", 0)),
            config=ImageConfig(
                env=dict(config.get("env") or {}),
                working_dir=config.get("working_dir"),
                user=config.get("user"),
            ),
            pulled=pulled,
        )

    # ---- files -------------------------------------------------------------------------

    def _prepare(self) -> None:
        """The store's directories and skopeo's files, made (again) on first use."""
        if self._prepared:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the sandbox uid must reach an image's rootfs below it
        for private in (self._home, self._tmp, self._registries_d):
            private.mkdir(mode=0o700, exist_ok=True)
        _write_private(self._registries_conf, b"")  # no host-wide search lists or mirrors
        # Signatures are looked up only in the store's own (empty) directory: without this,
        # containers/image falls back to /var/lib/containers/sigstore for uid 0, which a
        # runner in a user namespace may not read once a real root made /var/lib/containers.
        lookaside = self._home / "sigstore"
        lookaside.mkdir(mode=0o700, exist_ok=True)
        _write_private(
            self._registries_d / "default.yaml",
            f"default-docker:\n  lookaside: file://{lookaside}\n".encode(),
        )
        auths = {
            host: {"auth": base64.b64encode(secret.get_secret_value().encode()).decode()}
            for host, secret in self.options.credentials.items()
        }
        _write_private(self.auth_file, json.dumps({"auths": auths}).encode())
        self._prepared = True

    def _lock_path(self, digest: str) -> Path:
        return self.root / f"{_dir_name(digest)}.lock"

    def _is_unpacked(self, digest: str) -> bool:
        return (self.root / _dir_name(digest) / "image.json").is_file()


# ---- the cap and the sweep ---------------------------------------------------------------


def _place(root: Path, target: Path, name: str, size: int, cap: int) -> list[Path]:
    """Make room for a new image and rename it into place, one process at a time."""
    with _held(root / ".room.lock"):
        freed = make_room(root, size, cap, keep=name)
        final = root / name
        if final.exists():  # a directory without image.json: not an image, never in use
            trash = root / f".{name}.trash-{secrets.token_hex(4)}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(target, final)
    return freed


def _held_make_room(root: Path, needed: int, cap: int, keep: str) -> list[Path]:
    with _held(root / ".room.lock"):
        return make_room(root, needed, cap, keep=keep)


def make_room(root: Path, needed: int, cap: int, *, keep: str) -> list[Path]:
    """Remove unused images, least recently used first, until `needed` more bytes fit under
    `cap`. Images in use stay, even if that leaves the cache over its cap for a while."""
    images = _inventory(root)
    total = sum(size for path, size, _used in images if path.name != keep)
    removed: list[Path] = []
    for path, size, _used in sorted(images, key=lambda item: item[2]):
        if total + needed <= cap:
            break
        if path.name == keep:
            continue
        if _remove_unused(path):
            total -= size
            removed.append(path)
    if total + needed > cap:
        log.warning("image cache over its cap: the images kept are in use")
    return removed


def sweep_images(
    root: Path, *, max_idle_seconds: float, max_bytes: int, now: float | None = None
) -> SweptImages:
    swept = SweptImages()
    current = time.time() if now is None else now
    if not root.is_dir():
        return swept
    for entry in sorted(root.iterdir()):
        if not entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        if ".trash-" in entry.name:
            shutil.rmtree(entry, ignore_errors=True)
            swept.partial.append(entry)
        elif ".tmp-" in entry.name:
            pull = root / f"{entry.name[1:].split('.tmp-', 1)[0]}.pull"
            with _try_lock(pull) as free:
                if free:  # nobody is pulling it: the process that was died
                    shutil.rmtree(entry, ignore_errors=True)
                    swept.partial.append(entry)
    with _held(root / ".room.lock"):
        images = _inventory(root)
        total = sum(size for _path, size, _used in images)
        for path, size, used in sorted(images, key=lambda item: item[2]):
            idle = current - used > max_idle_seconds
            if (idle or total > max_bytes) and _remove_unused(path):
                total -= size
                swept.images.append(path)
    tags = root / "tags"
    for memo in sorted(tags.glob("*.json")) if tags.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            if current - memo.stat().st_mtime > max_idle_seconds:
                memo.unlink()
    for lock in sorted(root.glob("*.lock")):
        name = lock.name[: -len(".lock")]
        if not _DIR.fullmatch(name) or (root / name).exists():
            continue
        with contextlib.suppress(FileNotFoundError):
            if current - lock.stat().st_mtime <= ORPHAN_LOCK_SECONDS:
                continue
        pull = root / f"{name}.pull"
        with _try_lock(pull, create=True) as pull_free, _try_lock(lock) as lock_free:
            if pull_free and lock_free and not (root / name).exists():
                lock.unlink(missing_ok=True)
                pull.unlink(missing_ok=True)
                swept.locks.append(lock)
    if swept:
        log.info(
            "image housekeeping removed %d images, %d partial pulls, %d stale locks",
            len(swept.images),
            len(swept.partial),
            len(swept.locks),
        )
    return swept


def _inventory(root: Path) -> list[tuple[Path, int, float]]:
    """(directory, size, last use) of every unpacked image."""
    found: list[tuple[Path, int, float]] = []
    for path in sorted(root.iterdir()):
        if not _DIR.fullmatch(path.name) or not path.is_dir() or path.is_symlink():
            continue
        try:
            size = int(json.loads((path / "image.json").read_text()).get("size", 0))
        except (OSError, ValueError):
            size = 0
        try:
            used = (root / f"{path.name}.lock").stat().st_mtime
        except FileNotFoundError:
            used = 0.0
        found.append((path, size, used))
    return found


def _remove_unused(path: Path) -> bool:
    """Remove an unpacked image unless some process holds it; True if it went."""
    lock = path.with_name(f"{path.name}.lock")
    with _try_lock(lock, create=True) as free:
        if not free or not path.is_dir():
            return False
        trash = path.with_name(f".{path.name}.trash-{secrets.token_hex(4)}")
        os.rename(path, trash)  # gone for every new user at once; the delete can be slow
    shutil.rmtree(trash, ignore_errors=True)
    return True


# ---- locks -------------------------------------------------------------------------------


async def _lock(path: Path, operation: int) -> int:
    """An fd holding `flock(operation)` on the file now at `path` (waiting, cancellably)."""
    delay = 0.005
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a sweep deleted the file meanwhile: lock the new one


@contextlib.contextmanager
def _try_lock(path: Path, *, create: bool = False) -> Iterator[bool]:
    """An exclusive `flock` on `path` if nobody holds it (False otherwise, or if absent)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        yield not create
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield _same_file(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """A short exclusive section across processes (blocking: only around quick work)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


# ---- small helpers -----------------------------------------------------------------------


def _dir_name(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    name = f"{algorithm}-{hexdigits}"
    if not _DIR.fullmatch(name):
        raise PullFailed(f"unexpected digest {digest!r}")
    return name


def _digest_of(raw: bytes, like: str | None) -> str:
    if like is not None and like.startswith("sha512:"):
        return "sha512:" + hashlib.sha512(raw).hexdigest()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _json(raw: bytes, ref: ImageRef) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise PullFailed(f"the registry's manifest for {ref} is not JSON")
    return doc


def _read_config(layout: Path, ref: ImageRef, want: Platform) -> dict[str, Any]:
    """Env, WorkingDir and User from the image config skopeo stored, after checking the
    image is for this runner's architecture (a single-platform image may not be)."""

    def blob(digest: str) -> dict[str, Any]:
        algorithm, _, hexdigits = digest.partition(":")
        data = json.loads((layout / "blobs" / algorithm / hexdigits).read_bytes())
        if not isinstance(data, dict):
            raise ValueError(digest)
        return data

    try:
        index = json.loads((layout / "index.json").read_bytes())
        manifest = blob(index["manifests"][0]["digest"])
        config = blob(manifest["config"]["digest"])
    except (OSError, ValueError, LookupError, TypeError):
        raise PullFailed(f"image {ref} has no readable image config") from None
    arch, os_ = config.get("architecture"), config.get("os")
    if (os_ and os_ != want.os) or (arch and arch != want.architecture):
        raise NoPlatform(f"image {ref} is built for {os_}/{arch}; this runner runs {want}")
    inner = config.get("config") or {}
    env: dict[str, str] = {}
    for item in inner.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            env[key] = value
    return {
        "env": env,
        "working_dir": inner.get("WorkingDir") or None,
        "user": inner.get("User") or None,
    }


def _write_private(path: Path, data: bytes) -> None:
    """Write `path` whole, mode 0600, by rename (processes starting together may race)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mb(size: int) -> str:
    return f"{size / 1024**2:.1f} MB" if size < GiB else f"{size / GiB:.1f} GB"


__all__ = [
    "Image",
    "ImageConfig",
    "ImageOptions",
    "ImageStore",
    "Platform",
    "Source",
    "SweptImages",
    "host_platform",
    "make_room",
    "sweep_images",
]

"""The image store against a real registry: Debian's docker-registry serving images built
here with umoci, pulled by the runner's skopeo and umoci, run with bubblewrap."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from runner.images import (
    BadReference,
    ImageNotFound,
    ImageOptions,
    ImageStore,
    NoPlatform,
    NoShell,
    Platform,
    RegistryUnreachable,
    TooLarge,
    Unauthorized,
)
from runner.images.rootfs import MOUNT_DIRS, MOUNT_FILES
from testbed.registry import Registry, build_image
from tests.conftest import free_port

AMD64 = Platform("linux", "amd64")
ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "pa55-not-in-argv"


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry().start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def private_registry() -> Iterator[Registry]:
    reg = Registry(user=USER, password=PASSWORD).start()
    yield reg
    reg.stop()


@pytest.fixture
def work() -> Iterator[Path]:
    # Searchable by others (not pytest's 0700 tmp_path): the sandbox uid walks to the rootfs.
    path = Path(tempfile.mkdtemp(prefix="baro-images-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def store_for(work: Path, reg: Registry, **options: object) -> ImageStore:
    opts = ImageOptions(insecure=frozenset({reg.host}), platform=AMD64, **options)  # type: ignore[arg-type]
    return ImageStore(work / "data", opts)


def push(reg: Registry, work: Path, name: str, tag: str = "1", **build: object) -> str:
    """Build and push an image; returns its reference."""
    reg.push(build_image(work, **build), name, tag)  # type: ignore[arg-type]
    return f"{reg.host}/{name}:{tag}"


def leftovers(store: ImageStore) -> list[str]:
    """What a failed pull must not leave: half-made or unpacked image directories."""
    if not store.root.exists():
        return []
    return sorted(
        p.name for p in store.root.iterdir() if p.is_dir() and p.name.startswith((".", "sha"))
    )


# ---- pulling and the digest cache --------------------------------------------------------


async def test_an_image_is_pulled_unpacked_and_then_served_from_its_digest(
    registry: Registry, work: Path
) -> None:
    ref = push(
        registry,
        work,
        "test/basic",
        files={"marker": b"basic\n"},
        env=["PATH=/usr/local/bin:/bin", "LANG=C.UTF-8"],
        working_dir="/src",
        user="1000:1000",
    )
    store = store_for(work, registry)
    async with store.use(ref) as image:
        assert image.pulled
        assert image.reference == ref
        assert (image.rootfs / "marker").read_text() == "basic\n"
        assert image.config.env == {"PATH": "/usr/local/bin:/bin", "LANG": "C.UTF-8"}
        assert (image.config.working_dir, image.config.user) == ("/src", "1000:1000")
        assert image.size_bytes > 1_000_000  # busybox
        assert image.rootfs == store.root / image.digest.replace(":", "-") / "rootfs"
        for rel in (*MOUNT_DIRS, *MOUNT_FILES):
            assert (image.rootfs / rel).exists(), rel
    downloads = registry.blob_downloads("test/basic")
    assert downloads == 2  # one layer, one config

    async with store.use(ref) as again:
        assert not again.pulled
        assert again.digest == image.digest
    assert registry.blob_downloads("test/basic") == downloads
    assert leftovers(store) == [image.digest.replace(":", "-")]

    # Pinned by digest and already here: no request at all.
    seen = len(registry.requests())
    pinned = f"{registry.host}/test/basic@{image.digest}"
    async with ImageStore(work / "data", store.options).use(pinned) as by_digest:
        assert by_digest.rootfs == image.rootfs and not by_digest.pulled
    assert len(registry.requests()) == seen


async def test_a_moved_tag_pulls_the_new_digest(registry: Registry, work: Path) -> None:
    store = store_for(work, registry, tag_ttl=0.0)
    ref = push(registry, work, "test/moving", files={"marker": b"one\n"})
    async with store.use(ref) as first:
        pass
    push(registry, work, "test/moving", files={"marker": b"two\n"})
    async with store.use(ref) as second:
        assert second.pulled and second.digest != first.digest
        assert (second.rootfs / "marker").read_text() == "two\n"
    assert len(store.cached()) == 2


async def test_a_tag_resolved_recently_is_not_asked_again(work: Path) -> None:
    registry = Registry().start()
    try:
        ref = push(registry, work, "test/ttl", files={"marker": b"ttl\n"})
        async with store_for(work, registry).use(ref) as first:
            assert first.pulled
        seen = len(registry.requests())
        other_process = store_for(work, registry)  # the memo is on disk, not in memory
        async with other_process.use(ref) as again:
            assert again.digest == first.digest and not again.pulled
        assert len(registry.requests()) == seen
    finally:
        registry.stop()
    # Past the TTL the tag is asked again; with the registry gone, the last digest serves.
    expired = store_for(work, registry, tag_ttl=0.0)
    async with expired.use(ref) as fallback:
        assert fallback.digest == first.digest and not fallback.pulled
    with pytest.raises(RegistryUnreachable, match=f"registry {registry.host} is unreachable"):
        async with expired.use(f"{registry.host}/test/ttl:never-seen"):
            pass


async def test_concurrent_uses_in_one_process_pull_once(registry: Registry, work: Path) -> None:
    ref = push(registry, work, "test/gather", files={"big": os.urandom(4 << 20)})
    store = store_for(work, registry)

    async def use() -> bool:
        async with store.use(ref) as image:
            await asyncio.sleep(0)
            return image.pulled

    assert sorted(await asyncio.gather(use(), use(), use())) == [False, False, True]
    assert registry.blob_downloads("test/gather") == 2


CHILD = """
import asyncio, json, sys
from pathlib import Path
from runner.images import ImageOptions, ImageStore, Platform

async def main() -> None:
    data, host, ref = sys.argv[1:4]
    options = ImageOptions(insecure=frozenset({host}), platform=Platform("linux", "amd64"))
    async with ImageStore(Path(data), options).use(ref) as image:
        print(json.dumps({"pulled": image.pulled, "digest": image.digest}))

asyncio.run(main())
"""


def test_two_runner_processes_pulling_one_image_unpack_it_once(
    registry: Registry, work: Path
) -> None:
    ref = push(registry, work, "test/procs", files={"big": os.urandom(16 << 20)})
    argv = [sys.executable, "-c", CHILD, str(work / "data"), registry.host, ref]
    procs = [
        subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert sorted(r["pulled"] for r in results) == [False, True]
    assert len({r["digest"] for r in results}) == 1
    assert registry.blob_downloads("test/procs") == 2
    store = ImageStore(work / "data")
    assert len(store.cached()) == 1
    assert not [p for p in store.root.iterdir() if ".tmp-" in p.name]


async def test_a_registry_mirror_setting_serves_docker_hub_names(
    registry: Registry, work: Path
) -> None:
    push(registry, work, "hub/library/busybox", "1.36", files={"marker": b"mirrored\n"})
    store = store_for(work, registry, mirrors={"docker.io": f"{registry.host}/hub"})
    async with store.use("busybox:1.36") as image:
        assert image.reference == "docker.io/library/busybox:1.36"
        assert (image.rootfs / "marker").read_text() == "mirrored\n"


# ---- platforms ---------------------------------------------------------------------------


async def test_an_index_gives_this_runners_platform(registry: Registry, work: Path) -> None:
    amd = registry.push(build_image(work, files={"arch": b"amd64"}), "test/multi", "amd64")
    arm = registry.push(
        build_image(work, files={"arch": b"arm64"}, architecture="arm64"), "test/multi", "arm64"
    )
    registry.push_index("test/multi", "1", [(arm, "linux/arm64/v8"), (amd, "linux/amd64")])
    store = store_for(work, registry)
    async with store.use(f"{registry.host}/test/multi:1") as image:
        assert image.digest == amd.digest
        assert (image.rootfs / "arch").read_text() == "amd64"

    registry.push_index("test/multi", "arm-only", [(arm, "linux/arm64/v8")])
    with pytest.raises(NoPlatform, match=r"has no linux/amd64 variant \(it has: linux/arm64/v8\)"):
        async with store.use(f"{registry.host}/test/multi:arm-only"):
            pass
    with pytest.raises(NoPlatform, match="is built for linux/arm64; this runner runs linux/amd64"):
        async with store.use(f"{registry.host}/test/multi:arm64"):
            pass
    assert len(store.cached()) == 1


# ---- what goes wrong, said clearly, nothing kept -----------------------------------------


async def test_a_bad_name_fails_before_any_request(registry: Registry, work: Path) -> None:
    store = store_for(work, registry)
    seen = len(registry.requests())
    with pytest.raises(BadReference, match="must be lowercase"):
        async with store.use(f"{registry.host}/Test/Basic:1"):
            pass
    assert len(registry.requests()) == seen


async def test_a_missing_tag_or_repository_is_not_found(registry: Registry, work: Path) -> None:
    push(registry, work, "test/tags", "1")
    store = store_for(work, registry)
    with pytest.raises(ImageNotFound, match=f"registry {registry.host} has no tag '9'"):
        async with store.use(f"{registry.host}/test/tags:9"):
            pass
    with pytest.raises(ImageNotFound, match="not found"):
        async with store.use(f"{registry.host}/test/never-pushed:1"):
            pass
    assert leftovers(store) == []


async def test_an_unreachable_registry_is_named(work: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    store = ImageStore(work / "data", ImageOptions(insecure=frozenset({host}), platform=AMD64))
    with pytest.raises(RegistryUnreachable) as caught:
        async with store.use(f"{host}/test/x:1"):
            pass
    assert caught.value.host == host
    assert str(caught.value) == (
        f"registry {host} is unreachable for image {host}/test/x:1 (connection refused)"
    )


async def test_an_image_without_a_shell_is_refused(registry: Registry, work: Path) -> None:
    ref = push(registry, work, "test/noshell", shell=False, files={"app": b"static binary"})
    store = store_for(work, registry)
    with pytest.raises(NoShell, match=r"^image .*/test/noshell:1 has no shell \(/bin/sh\)"):
        async with store.use(ref):
            pass
    assert leftovers(store) == []


async def test_a_dangling_shell_link_is_no_shell(registry: Registry, work: Path) -> None:
    def dangling(root: Path) -> None:
        (root / "bin" / "sh").symlink_to("/usr/bin/dash")  # exists on the host, not here

    ref = push(registry, work, "test/dangling", shell=False, prepare=dangling)
    with pytest.raises(NoShell):
        async with store_for(work, registry).use(ref):
            pass


async def test_setuid_bits_and_device_nodes_do_not_survive(registry: Registry, work: Path) -> None:
    def privileged(root: Path) -> None:
        shutil.copy(root / "bin" / "busybox", root / "bin" / "su")
        (root / "bin" / "su").chmod(0o6755)
        if os.geteuid() == 0:
            os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    ref = push(registry, work, "test/setuid", prepare=privileged)
    async with store_for(work, registry).use(ref) as image:
        su = (image.rootfs / "bin" / "su").stat()
        assert stat.S_IMODE(su.st_mode) == 0o755
        if os.geteuid() == 0:
            assert not stat.S_ISCHR((image.rootfs / "null").lstat().st_mode)


async def test_credentials_come_from_settings_through_a_private_auth_file(
    private_registry: Registry, work: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reg = private_registry
    ref = push(reg, work, "team/private", files={"marker": b"private\n"})

    anonymous = store_for(work, reg)
    with pytest.raises(Unauthorized, match=f"the runner has no credentials for {reg.host}"):
        async with anonymous.use(ref):
            pass

    wrong = store_for(work, reg, credentials={reg.host: SecretStr(f"{USER}:wrong-password")})
    with pytest.raises(Unauthorized, match="refused the runner's credentials"):
        async with wrong.use(ref):
            pass

    # A skopeo that writes down its argv, to show that no credential is ever in one.
    argv_log = work / "argv.log"
    wrapper = work / "skopeo"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {argv_log}\nexec {shutil.which("skopeo")} "$@"\n')
    wrapper.chmod(0o755)
    store = store_for(
        work, reg, credentials={reg.host: SecretStr(f"{USER}:{PASSWORD}")}, skopeo=str(wrapper)
    )
    async with store.use(ref) as image:
        assert (image.rootfs / "marker").read_text() == "private\n"
    assert stat.S_IMODE(store.auth_file.stat().st_mode) == 0o600
    assert not store.auth_file.is_relative_to(image.rootfs.parent)
    argv = argv_log.read_text()
    assert "--authfile" in argv and PASSWORD not in argv
    assert PASSWORD not in caplog.text and "wrong-password" not in caplog.text


# ---- the cap -----------------------------------------------------------------------------


async def test_the_cap_evicts_an_unused_image_but_never_one_in_use(
    registry: Registry, work: Path
) -> None:
    refs = [push(registry, work, f"test/cap-{n}", files={"marker": n.encode()}) for n in "abcd"]
    async with store_for(work, registry).use(refs[0]) as probe:
        size = probe.size_bytes
    store = store_for(work, registry, max_bytes=int(size * 2.5))  # room for two
    async with store.use(refs[0]) as a:
        async with store.use(refs[1]) as b:
            pass
        async with store.use(refs[2]) as c:
            # b was unused: it went; a is in use and stays.
            assert {p.name for p in store.cached()} == {a.rootfs.parent.name, c.rootfs.parent.name}
            assert not b.rootfs.exists()
        async with store.use(refs[3]) as d:
            assert {p.name for p in store.cached()} == {a.rootfs.parent.name, d.rootfs.parent.name}
        assert (a.rootfs / "marker").read_text() == "a"


async def test_an_image_larger_than_the_cap_is_refused(registry: Registry, work: Path) -> None:
    ref = push(registry, work, "test/large", files={"big": os.urandom(2 << 20)})
    tiny = store_for(work, registry, max_bytes=1 << 20)
    with pytest.raises(
        TooLarge, match=r"its layers alone are 3\.\d MB compressed, the image cache holds 1\.0 MB"
    ):
        async with tiny.use(ref):
            pass
    assert registry.blob_downloads("test/large") == 0  # refused before downloading
    # 3.5 MB: the compressed layers fit, the unpacked root (busybox and 2 MiB) does not.
    small = store_for(work, registry, max_bytes=int(3.5 * (1 << 20)))
    with pytest.raises(TooLarge, match=r"3\.\d MB unpacked, the image cache holds 3\.5 MB"):
        async with small.use(ref):
            pass
    assert leftovers(small) == []


DISK_FULL_CHILD = """
import asyncio, sys
from pathlib import Path
from runner.images import DiskFull, ImageOptions, ImageStore, Platform

async def main() -> None:
    data, host, ref = sys.argv[1:4]
    options = ImageOptions(insecure=frozenset({host}), platform=Platform("linux", "amd64"))
    store = ImageStore(Path(data), options)
    try:
        async with store.use(ref):
            print("pulled")
    except DiskFull as exc:
        print(exc)
    print(sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name[0] in ".s"))

asyncio.run(main())
"""


def test_a_full_disk_is_said_and_leaves_nothing(registry: Registry, work: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    ref = push(registry, work, "test/fill", files={"big": os.urandom(6 << 20)})
    data = work / "small-disk"
    data.mkdir()
    # A 4 MB file system of its own, in a private mount namespace: nothing to clean up.
    script = 'mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"'
    argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    argv += [str(data), sys.executable, "-c", DISK_FULL_CHILD, str(data), registry.host, ref]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    said, left = done.stdout.splitlines()
    assert said == f"the runner's disk is full: cannot store image {ref}"
    assert left == "[]"


# ---- housekeeping ------------------------------------------------------------------------


async def test_the_sweep_removes_idle_images_dead_pulls_and_stale_locks(
    registry: Registry, work: Path
) -> None:
    refs = [push(registry, work, f"test/sweep-{n}", files={"marker": n.encode()}) for n in "xy"]
    store = store_for(work, registry, idle_seconds=3600.0)
    async with store.use(refs[0]) as idle:
        pass
    dead = store.root / f".{idle.rootfs.parent.name}.tmp-dead"
    (dead / "layout").mkdir(parents=True)
    long_ago = time.time() - 2 * 86400
    async with store.use(refs[1]) as busy:
        for image in (idle, busy):
            os.utime(store.root / f"{image.rootfs.parent.name}.lock", (long_ago, long_ago))
        swept = await asyncio.to_thread(store.sweep)
        assert swept.images == [idle.rootfs.parent]
        assert swept.partial == [dead]
        assert busy.rootfs.is_dir() and not idle.rootfs.exists()
        # The lock files of an image that is gone go too (a waiter re-checks which file
        # it locked); one used recently stays a while, a puller may be about to use it.
        lock = store.root / f"{idle.rootfs.parent.name}.lock"
        assert swept.locks == [lock]
        assert not lock.exists() and not lock.with_suffix(".pull").exists()
    fresh = store.root / f"sha256-{'0' * 64}.lock"
    fresh.touch()
    assert not store.sweep().locks and fresh.exists()
    assert fresh in store.sweep(now=time.time() + 7200).locks
    async with store.use(refs[0]) as back:  # and the image comes back when wanted
        assert back.pulled


async def test_the_sweep_brings_the_cache_under_its_cap(registry: Registry, work: Path) -> None:
    refs = [push(registry, work, f"test/over-{n}", files={"marker": n.encode()}) for n in "pq"]
    big = store_for(work, registry)
    for ref in refs:
        async with big.use(ref) as image:
            pass
    capped = store_for(work, registry, max_bytes=int(image.size_bytes * 1.5))
    swept = capped.sweep()
    assert len(swept.images) == 1 and len(capped.cached()) == 1


# ---- running in it -----------------------------------------------------------------------


async def test_a_command_runs_with_the_unpacked_image_as_read_only_root(
    registry: Registry, work: Path
) -> None:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None, "bubblewrap is not installed: apt-get install bubblewrap"
    ref = push(registry, work, "test/run", files={"etc/os-release": b"ID=baro-test\n"})
    worktree = work / "worktree"
    worktree.mkdir(mode=0o777)
    worktree.chmod(0o777)
    async with store_for(work, registry).use(ref) as image:
        command = textwrap.dedent(
            """
            echo ok
            cat /etc/os-release
            echo made > /workspace/out.txt
            echo tmp > /tmp/t && cat /tmp/t
            touch /etc/nope 2>/dev/null || echo read-only
            id -u
            """
        )
        done = subprocess.run(
            [
                bwrap,
                "--ro-bind", str(image.rootfs), "/",
                "--proc", "/proc",
                "--dev", "/dev",
                "--tmpfs", "/tmp",
                "--bind", str(worktree), "/workspace",
                "--chdir", "/workspace",
                "--unshare-all",
                "--unshare-user",
                "--uid", "1000",
                "--gid", "1000",
                "--die-with-parent",
                "--clearenv",
                "--setenv", "PATH", image.config.env["PATH"],
                "/bin/sh", "-c", command,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ID=baro-test", "tmp", "read-only", "1000"]
    assert (worktree / "out.txt").read_text() == "made\n"

"""The bubblewrap command line: which host paths a sandboxed command can see, and how.

Only the system toolchain (`/usr`, the `/lib*` and `/bin` links, a short list of `/etc`
entries) is bound, read-only; the worktree is the one writable host path. `/etc/passwd`,
`/etc/group` and `/etc/hosts` are generated, and `/etc/resolv.conf` appears only with network.
Everything else of the host (the runner's data directory, keys, config, `/root`, `/home`,
`/var`, `/tmp`) is simply never mounted. With an image (`Layout.root`) the image's root file
system replaces all of the host's system: nothing of the host is seen but DNS settings.

Every writable file system other than the worktree is a tmpfs with a size (`/tmp`, HOME,
`/dev/shm`): an unsized tmpfs may take half the machine's memory. `/dev` itself is
remounted read-only after `/dev/shm` is mounted on it (bubblewrap's `--size` applies only
to `--tmpfs`, not to `--dev`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Identity and fixed paths inside the sandbox.
INNER_UID = 1000
INNER_GID = 1000
INNER_USER = "sandbox"
HOSTNAME = "sandbox"
HOME = "/home/sandbox"
TMPDIR = "/tmp"  # noqa: S108 - a private tmpfs inside the sandbox
SHM = "/dev/shm"  # noqa: S108 - a sized tmpfs inside the sandbox

# /etc entries normal tools need; deliberately not gitconfig, pip.conf, npmrc and friends,
# which may carry credentials.
ETC_ENTRIES = (
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
    "os-release",
    "lsb-release",
    "debian_version",
    "perl",
)
ETC_GLOBS = ("java-*",)  # the JDK keeps its security config in /etc/java-<n>-openjdk
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def generated_files() -> dict[str, bytes]:
    """Files written into the sandbox instead of bound from the host."""
    return {
        "/etc/passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{INNER_USER}:x:{INNER_UID}:{INNER_GID}:{INNER_USER}:{HOME}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "/etc/group": (f"root:x:0:\n{INNER_USER}:x:{INNER_GID}:\nnogroup:x:65534:\n").encode(),
        "/etc/hosts": (
            f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ).encode(),
        "/etc/hostname": f"{HOSTNAME}\n".encode(),
    }


def _system_binds(network: bool) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    etc = Path("/etc")
    entries = [etc / name for name in ETC_ENTRIES]
    for pattern in ETC_GLOBS:
        entries += sorted(etc.glob(pattern))
    if network:
        entries.append(etc / "resolv.conf")
    for entry in entries:
        args += ["--ro-bind-try", str(entry), str(entry)]
    return args


@dataclass(frozen=True)
class Mount:
    """A host path shown at `dest` inside one command's sandbox, mounted after the
    sandbox's own tmpfs (so it may sit in HOME or /run): the gateway bridge's directory,
    an engine's install, a HOME kept across an engine's turns."""

    source: Path
    dest: str
    writable: bool = False


@dataclass(frozen=True)
class Layout:
    """One command's view of the host."""

    worktree: Path
    workdir: str
    network: bool
    extra_ro_binds: tuple[Path, ...]
    tmp_size_bytes: int
    shm_size_bytes: int
    mounts: tuple[Mount, ...] = ()
    root: Path | None = None
    """An unpacked image's root file system, bound read-only as `/` (None: the host's
    system directories, as listed above)."""
    shell: str = "/bin/bash"


def bwrap_argv(
    bwrap: str,
    layout: Layout,
    *,
    data_fds: Mapping[str, int],
    env: Mapping[str, str],
    command: str,
    info_fd: int | None = None,
) -> list[str]:
    """The full argv; `data_fds` maps a sandbox path to a readable fd with its content.

    With `info_fd`, bubblewrap writes JSON there naming the sandbox's pid 1 (`child-pid`,
    in the runner's pid namespace) and its namespaces, so the runner can kill and await it.
    """
    args = [bwrap, "--unshare-all", "--unshare-user"]
    if layout.network:
        args.append("--share-net")
    args += [
        "--disable-userns",
        "--uid",
        str(INNER_UID),
        "--gid",
        str(INNER_GID),
        "--hostname",
        HOSTNAME,
        "--die-with-parent",
        "--new-session",
    ]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    args += _system_binds(layout.network) if layout.root is None else _image_binds(layout)
    for dest, fd in data_fds.items():
        args += ["--perms", "0644", "--ro-bind-data", str(fd), dest]
    for path in layout.extra_ro_binds:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(layout.shm_size_bytes), "--perms", "1777", "--tmpfs", SHM]
    args += ["--remount-ro", "/dev"]
    for tmpfs in (TMPDIR, HOME):
        args += ["--size", str(layout.tmp_size_bytes), "--tmpfs", tmpfs]
    if layout.root is None:
        args += ["--dir", "/var", "--symlink", "../tmp", "/var/tmp"]  # noqa: S108 - sandbox-only
    else:  # the image has its own /var (read-only); /var/tmp is a mount point in it
        args += ["--size", str(layout.tmp_size_bytes), "--tmpfs", "/var/tmp"]  # noqa: S108
    for mount in layout.mounts:
        args += ["--bind" if mount.writable else "--ro-bind", str(mount.source), mount.dest]
    args += ["--bind", str(layout.worktree), layout.workdir]
    args += ["--remount-ro", "/", "--chdir", layout.workdir, "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    args += ["--", layout.shell, "-c", command]
    return args


def _image_binds(layout: Layout) -> list[str]:
    """The image as the whole read-only root; of the host only DNS, when the network is on
    (the image's mount points for it and for `/etc/passwd` and friends exist: the image
    store made them when it unpacked it)."""
    assert layout.root is not None
    args = ["--ro-bind", str(layout.root), "/"]
    if layout.network:
        args += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    return args

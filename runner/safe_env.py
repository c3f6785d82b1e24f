"""The environment a sandboxed command sees: a fixed minimal base plus vetted extras.

Nothing is inherited from the runner, whose environment holds the GitHub App key, model API
keys and the Redis URL. Extras that look like credentials are refused outright, so a bug in a
caller fails loudly instead of leaking a secret into model-written code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Substrings (case-insensitive) that mark a variable as a credential.
_SECRET_WORDS = (
    "TOKEN",
    "KEY",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "PRIVATE",
    "COOKIE",
)
# Whole `_`-separated name parts that mark a credential (`AUTH` as a substring would also
# catch GIT_AUTHOR_NAME).
_SECRET_PARTS = frozenset({"API", "AUTH", "OAUTH", "AUTHORIZATION", "PAT", "DSN"})
# Prefixes owned by the bot or by services whose credentials the runner holds.
_SECRET_PREFIXES = (
    "BARO_",
    "GITHUB_",
    "GH_",
    "REDIS_",
    "ARQ_",
    "OPENAI_",
    "ANTHROPIC_",
    "DEEPSEEK_",
    "OPENROUTER_",
    "AWS_",
)
# Values that are credentials whatever the variable is called.
_SECRET_VALUE = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|rediss?://[^\s/@]*:[^\s/@]+@"
)


GATEWAY_DUMMY_KEY = "baro-gateway-dummy-key"
"""The only value a key-named variable may have in the sandbox: an agent CLI's stand-in
key, which the model gateway drops (the real key is added outside)."""
GATEWAY_URL_VARS = frozenset({"ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"})
_LOOPBACK_URL = re.compile(r"http://127\.0\.0\.1:[0-9]{2,5}(/v1)?")


def _gateway_value(name: str, value: str) -> bool:
    """A variable an agent CLI needs to reach the gateway, carrying nothing secret."""
    if value == GATEWAY_DUMMY_KEY:
        return True
    return name in GATEWAY_URL_VARS and _LOOPBACK_URL.fullmatch(value) is not None


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    if upper.startswith(_SECRET_PREFIXES):
        return True
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return any(part in _SECRET_PARTS for part in upper.split("_"))


def check_extra_env(extra: Mapping[str, str]) -> None:
    """Raise ValueError for a malformed or credential-looking variable (value never echoed)."""
    for name, value in extra.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if is_secret_name(name) and not _gateway_value(name, value):
            raise ValueError(f"refusing to pass {name} into the sandbox: it looks like a secret")
        if "\0" in value:
            raise ValueError(f"environment variable {name} contains a NUL byte")
        if _SECRET_VALUE.search(value):
            raise ValueError(
                f"refusing to pass {name} into the sandbox: its value looks like a credential"
            )


def command_env(
    *,
    home: str,
    tmpdir: str,
    extra_path: tuple[str, ...] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment for one command; `extra` may override the base values."""
    path = ":".join((*extra_path, DEFAULT_PATH))
    env = {
        "PATH": path,
        "HOME": home,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        # Tests must not leave bytecode caches in the worktree for the commit to sweep up.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if extra:
        check_extra_env(extra)
        env.update(extra)
    return env

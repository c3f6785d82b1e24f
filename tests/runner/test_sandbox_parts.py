"""The sandbox's pure parts: output capping, environment vetting, ownership hand-over."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runner.capture import CappedOutput
from runner.diskcap import disk_usage
from runner.ownership import chown_tree, lend_tree
from runner.safe_env import check_extra_env, command_env, is_secret_name


def test_capped_output_keeps_everything_when_small() -> None:
    out = CappedOutput(head=4, tail=4)
    out.add(b"abc")
    out.add(b"def")
    assert (out.text(), out.dropped, out.total) == ("abcdef", 0, 6)


def test_capped_output_keeps_head_and_tail() -> None:
    out = CappedOutput(head=3, tail=3)
    for chunk in (b"01", b"2345", b"6", b"789"):
        out.add(chunk)
    assert out.dropped == 4
    assert out.text() == "012\n[... 4 bytes of output dropped ...]\n789"


def test_capped_output_replaces_split_utf8() -> None:
    out = CappedOutput(head=1, tail=0)
    out.add("é".encode())
    assert out.text().startswith("\ufffd")


@pytest.mark.parametrize(
    "name",
    ["GITHUB_TOKEN", "BARO_X", "REDIS_URL", "AWS_REGION", "X_API_Y", "API_BASE", "SSH_AUTH_SOCK"],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "CI", "GIT_AUTHOR_NAME", "PYTHONPATH", "NODE_ENV"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    "value",
    ["sk-abcdefghijklmnop0123", "redis://:hunter2@redis:6379/0", "-----BEGIN PRIVATE KEY-----"],
)
def test_credential_values(value: str) -> None:
    with pytest.raises(ValueError, match="looks like a credential"):
        check_extra_env({"HARMLESS": value})


def test_bad_names_and_values() -> None:
    with pytest.raises(ValueError, match="invalid"):
        check_extra_env({"A=B": "x"})
    with pytest.raises(ValueError, match="NUL"):
        check_extra_env({"A": "x\0y"})


def test_command_env_is_minimal_and_overridable() -> None:
    env = command_env(home="/h", tmpdir="/t", extra_path=("/opt/x/bin",), extra={"CI": "1"})
    expected = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TERM", "CI"}
    assert set(env) == expected | {"PYTHONDONTWRITEBYTECODE"}
    assert env["PATH"].startswith("/opt/x/bin:")
    assert env["TERM"] == "dumb"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing ownership needs root")
def test_chown_tree_never_follows_links_and_strips_set_id(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    binary = tree / "sub" / "tool"
    binary.write_text("#!/bin/sh\n")
    (tree / "link").symlink_to(outside)
    chown_tree(tree, 2_000_000_001, 2_000_000_001)
    assert outside.stat().st_uid == 0
    assert os.lstat(tree / "link").st_uid == 2_000_000_001
    binary.chmod(0o6755)
    assert chown_tree(tree, 0, 0) == 4
    assert outside.stat().st_uid == 0
    assert os.lstat(tree / "link").st_uid == 0
    assert binary.stat().st_uid == 0
    assert not binary.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_disk_usage_counts_hard_links_once_and_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * (1024 * 1024))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(b"y" * (256 * 1024))
    before = disk_usage(tree).bytes
    assert before >= 256 * 1024
    os.link(tree / "sub" / "data", tree / "again")
    (tree / "escape").symlink_to(outside)
    (tree / "escape-file").symlink_to(outside / "big")
    after = disk_usage(tree)
    assert after.bytes - before < 64 * 1024  # the link, not the data again, not `outside`
    assert after.entries == 6


def test_lend_walk_sums_the_same_usage(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"z" * 100_000)
    os.link(tree / "a" / "b" / "f", tree / "g")
    lent = lend_tree(tree, os.geteuid(), os.getegid())
    assert lent.changed == 0
    assert lent.used_bytes == disk_usage(tree).bytes

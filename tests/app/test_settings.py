from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings

SECRET = "webhook-secret-value-xyz"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pem: str) -> pytest.MonkeyPatch:
    for name in ("BARO_CONFIG", "BARO_GITHUB_PRIVATE_KEY_FILE", "BARO_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BARO_GITHUB_APP_ID", "123")
    monkeypatch.setenv("BARO_GITHUB_PRIVATE_KEY", pem)
    monkeypatch.setenv("BARO_GITHUB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BARO_GITHUB_APP_SLUG", "baro-test")
    return monkeypatch


def test_loads_with_defaults(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.github_app_id == 123
    assert settings.github_api_url == "https://api.github.com"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.trigger_label == "baro"
    assert settings.bot_login == "baro-test[bot]"
    assert SECRET not in repr(settings)


def test_escaped_newlines_in_key_are_accepted(env: pytest.MonkeyPatch, pem: str) -> None:
    env.setenv("BARO_GITHUB_PRIVATE_KEY", pem.replace("\n", "\\n"))
    assert load_settings().private_key_pem().startswith("-----BEGIN PRIVATE KEY-----\n")


def test_missing_variable_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("BARO_GITHUB_WEBHOOK_SECRET")
    with pytest.raises(ConfigError, match=r"^BARO_GITHUB_WEBHOOK_SECRET is required but not set$"):
        load_settings()


def test_invalid_value_named_without_echo(env: pytest.MonkeyPatch) -> None:
    env.setenv("BARO_GITHUB_APP_ID", "not-a-number-secretish")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("BARO_GITHUB_APP_ID:")
    assert "secretish" not in str(info.value)


def test_missing_private_key(env: pytest.MonkeyPatch) -> None:
    env.delenv("BARO_GITHUB_PRIVATE_KEY")
    with pytest.raises(
        ConfigError, match="BARO_GITHUB_PRIVATE_KEY or BARO_GITHUB_PRIVATE_KEY_FILE"
    ):
        load_settings()


def test_bad_private_key_not_echoed(env: pytest.MonkeyPatch) -> None:
    env.setenv("BARO_GITHUB_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nsupersecretjunk\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == "BARO_GITHUB_PRIVATE_KEY: not a PEM private key"


def test_private_key_file(env: pytest.MonkeyPatch, pem: str, tmp_path: Path) -> None:
    env.delenv("BARO_GITHUB_PRIVATE_KEY")
    key_file = tmp_path / "key.pem"
    key_file.write_text(pem)
    env.setenv("BARO_GITHUB_PRIVATE_KEY_FILE", str(key_file))
    assert load_settings().private_key_pem() == pem
    env.setenv("BARO_GITHUB_PRIVATE_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="BARO_GITHUB_PRIVATE_KEY_FILE: file not found"):
        load_settings()


def test_toml_config_file_env_wins(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "baro.toml"
    config.write_text('trigger_label = "robot"\nredis_url = "redis://10.0.0.1:6379/2"\n')
    env.setenv("BARO_CONFIG", str(config))
    env.setenv("BARO_REDIS_URL", "redis://127.0.0.1:6390/0")
    settings = load_settings()
    assert settings.config == config
    assert settings.trigger_label == "robot"
    assert settings.redis_url == "redis://127.0.0.1:6390/0"


def test_bad_toml_and_missing_config(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("BARO_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="BARO_CONFIG: file not found"):
        load_settings()
    bad = tmp_path / "bad.toml"
    bad.write_text("trigger_label = \n")
    env.setenv("BARO_CONFIG", str(bad))
    with pytest.raises(ConfigError, match="BARO_CONFIG"):
        load_settings()


def test_sandbox_limits_settings(env: pytest.MonkeyPatch) -> None:
    from runner.limits import MiB
    from runner.worker import sandbox_policy

    settings = load_settings()
    assert (settings.sandbox_cgroup, settings.sandbox_memory_mib) == ("auto", 2048)
    for value, expected in (("none", "none"), ("/sys/fs/cgroup/baro", Path("/sys/fs/cgroup/baro"))):
        env.setenv("BARO_SANDBOX_CGROUP", value)
        assert load_settings().sandbox_cgroup == expected
    env.setenv("BARO_SANDBOX_MEMORY_MIB", "512")
    env.setenv("BARO_SANDBOX_WRITE_MIB", "100")
    policy = sandbox_policy(load_settings())
    assert policy.cgroup == Path("/sys/fs/cgroup/baro")
    assert (policy.memory_total_bytes, policy.write_limit_bytes) == (512 * MiB, 100 * MiB)
    env.setenv("BARO_SANDBOX_CGROUP", "relative/dir")
    with pytest.raises(ConfigError, match=r"^BARO_SANDBOX_CGROUP:"):
        load_settings()

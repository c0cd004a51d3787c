"""Settings load from YAML, the environment wins, and mistakes name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from troupe.config import Settings, load_settings
from troupe.errors import ConfigError

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).parents[2] / "config" / "multi-agent.yaml"


def test_shipped_config_equals_the_built_in_defaults() -> None:
    assert load_settings(SHIPPED) == Settings()


def test_every_shipped_key_has_a_comment() -> None:
    for number, line in enumerate(SHIPPED.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith(":"):  # a section heading
            continue
        assert "#" in line, f"config line {number} has no comment: {line!r}"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_SERVER__PORT", "9123")
    monkeypatch.setenv("TROUPE_LLM__SIMULATION__LATENCY_MS", "250")
    settings = load_settings(SHIPPED)
    assert settings.server.port == 9123
    assert settings.llm.simulation.latency_ms == 250
    assert settings.server.host == "127.0.0.1"  # the rest of the section survives


def test_invalid_value_names_the_key_and_the_env_var(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"server": {"port": 70000}}))
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert "server.port" in caught.value.message
    assert "TROUPE_SERVER__PORT" in caught.value.message
    assert "65535" in caught.value.message


def test_unknown_key_is_rejected_not_ignored(tmp_path: Path) -> None:
    file = tmp_path / "typo.yaml"
    file.write_text(yaml.safe_dump({"tasks": {"max_atempts": 3}}))
    with pytest.raises(ConfigError, match=r"tasks\.max_atempts"):
        load_settings(file)


def test_bad_database_url_scheme_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_DATABASE__URL", "mysql://x@y/z")
    with pytest.raises(ConfigError, match=r"database.*postgresql\+asyncpg"):
        load_settings(SHIPPED)


def test_missing_explicit_file_and_broken_yaml_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)


def test_default_budget_above_the_maximum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_TASKS__DEFAULT_TOKEN_BUDGET", "5")
    monkeypatch.setenv("TROUPE_TASKS__MAX_TOKEN_BUDGET", "4")
    with pytest.raises(ConfigError, match="default_token_budget"):
        load_settings(SHIPPED)


def test_embedded_database_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(SHIPPED, data_dir=str(tmp_path))
    assert settings.embedded
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'troupe.db'}"


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TROUPE_SERVER__PORT", "9123")
    monkeypatch.setenv("TROUPE_SERVER__HOST", "127.0.0.2")
    settings = load_settings(SHIPPED, server={"port": 0})
    assert settings.server.port == 0
    assert settings.server.host == "127.0.0.2"


def test_a_model_without_a_price_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TROUPE_LLM__TIERS__LARGE", '[{"provider": "simulation", "model": "sim-unpriced"}]'
    )
    with pytest.raises(ConfigError, match=r"llm: .*sim-unpriced.*pricing"):
        load_settings(SHIPPED)

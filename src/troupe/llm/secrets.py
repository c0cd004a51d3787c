"""Provider API keys: from the environment or a secrets file, never from the config.

``llm.secrets_file`` (optional) is a YAML mapping of provider name to key, kept out of
the repository (mode 600 is the caller's business). A provider's key is the file's
entry for it, else the environment variable ``api_key_env`` names (for openai and
anthropic, ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` unless set). Keys are held as
``SecretStr``: printing, logging or serialising one shows ``**********``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import SecretStr

from troupe.config import LLMSettings
from troupe.errors import ConfigError

# Kinds that cannot work without a key (an OpenAI-compatible server may need none).
_KEY_REQUIRED = {"openai", "anthropic"}


def provider_keys(
    settings: LLMSettings, environ: Mapping[str, str] = os.environ
) -> dict[str, SecretStr]:
    """The key of every provider that has one; ConfigError for one that needs one."""
    from_file = _read_secrets_file(settings.secrets_file)
    keys: dict[str, SecretStr] = {}
    for name, provider in settings.providers.items():
        if provider.kind == "simulation":
            continue
        env = provider.key_env
        value = from_file.get(name) or (environ.get(env) if env else None)
        if value:
            keys[name] = SecretStr(value)
        elif provider.kind in _KEY_REQUIRED:
            where = f"set {env}" if env else "set api_key_env"
            raise ConfigError(
                f"provider {name!r} ({provider.kind}) has no API key: {where}, or add "
                f"an entry {name!r} to llm.secrets_file"
            )
    return keys


def _read_secrets_file(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"llm.secrets_file {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError:
        # The parser's message may quote the file's content: keep it out.
        raise ConfigError(f"llm.secrets_file {path}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"llm.secrets_file {path}: must map provider names to keys (strings)")
    return data


def env_secret(name: str | None, environ: Mapping[str, str] = os.environ) -> SecretStr | None:
    """The secret in environment variable ``name`` (None: no name, or not set)."""
    value = environ.get(name) if name else None
    return SecretStr(value) if value else None

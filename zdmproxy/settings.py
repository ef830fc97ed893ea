"""Configuration: environment variables prefixed ZDM_, then an optional TOML file.

Every migration-policy knob is also a setting (ZDM_LOCK_TIMEOUT_MS ...), so
operators set defaults once and callers override per migration.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from zdmproxy.errors import ConfigError
from zdmproxy.policy import MigrationPolicy

CONFIG_ENV = "ZDM_CONFIG"
DEFAULT_CONFIG = Path("zdmproxy.toml")


class Settings(BaseSettings, MigrationPolicy):
    model_config = SettingsConfigDict(env_prefix="ZDM_", extra="forbid", frozen=True)

    database_url: str | None = None
    # Read again on every new connection, so a rotated secret is picked up without a restart.
    database_password_file: Path | None = None
    # The daemon (`zdmproxy serve`), and where the other commands find a running one.
    daemon_url: str | None = None  # http://127.0.0.1:8080 or unix:/run/zdmproxy/api.sock
    token_file: Path | None = None  # bearer token; required when listening beyond loopback
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    unix_socket: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get(CONFIG_ENV) or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    def policy(self, **overrides: object) -> MigrationPolicy:
        # Only what was set explicitly: a default must not count as a choice (a first
        # lock_timeout above the default maximum raises the maximum unless that was set).
        fields = {
            name: getattr(self, name)
            for name in MigrationPolicy.model_fields
            if name in self.model_fields_set
        }
        try:
            return MigrationPolicy(**{**fields, **overrides})
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None


def load_settings(**overrides: object) -> Settings:
    """Read settings; a bad value becomes a ConfigError that names the setting."""
    toml_file = os.environ.get(CONFIG_ENV)
    if toml_file and not Path(toml_file).is_file():
        raise ConfigError(f"{CONFIG_ENV}={toml_file}: no such file")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        name = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"ZDM_{name.upper()} ({name}): {message}" if name else message)
    return "bad configuration: " + "; ".join(problems)

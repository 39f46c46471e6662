"""Settings: declared once, with the help text the README shows.

Every entry point (the API's app factory, the worker, the CLI callback) loads one ``Settings`` and passes it
down; nothing else reads the environment. Values come from ``OFEDREPO_*`` environment variables and, when
``OFEDREPO_CONFIG_FILE`` names one, from a TOML file (environment variables win).
"""

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AnyHttpUrl, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "OFEDREPO_CONFIG_FILE"

GiB = 1024**3


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` as well as a TOML list: environment variables cannot carry lists."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set. The README's settings table is generated from these descriptions."""

    model_config = SettingsConfigDict(env_prefix="OFEDREPO_", extra="ignore")

    data_dir: Path = Field(
        Path("var"),
        description="Where ofedrepo keeps everything it writes: the published tree (`repos/`), unpacked "
        "bundles, staging, the site signing key and (by default) the SQLite database.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database. Default: SQLite at `<data_dir>/ofedrepo.db`. "
        "Use PostgreSQL (`postgresql+psycopg://user@host/db`) when workers run on several hosts.",
    )
    public_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:8000"),
        description="The URL clients reach this service at; written into `.repo` files and DIB snippets, "
        "so set it to the address your image builders and nodes use.",
    )
    host: str = Field("127.0.0.1", description="Address `ofedrepo serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `ofedrepo serve` listens on.")
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens. When set, every mutating API call needs "
        "`Authorization: Bearer <token>`. Empty: no authentication.",
    )
    signing_enabled: bool = Field(
        True,
        description="Sign unsigned packages (add-kernel-support output) with the site key, so that "
        "`gpgcheck=1` works. Turn off only if you sign elsewhere.",
    )
    signing_key_file: Path | None = Field(
        None,
        description="An ASCII-armoured, passphrase-less secret key to use as the site key. Default: a key "
        "generated under `<data_dir>/keys/` on first use.",
    )
    signing_key_uid: str = Field(
        "ofedrepo site key <ofedrepo@localhost>",
        description="User ID of the generated site key.",
    )
    archive_max_bytes: int = Field(
        20 * GiB,
        gt=0,
        description="Largest total size an archive (tgz, iso) may unpack to; larger ones are refused.",
    )
    archive_max_members: int = Field(200_000, gt=0, description="Largest number of entries an archive may hold.")

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens_from_text(cls, value: Any) -> Any:
        return _split_list(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ofedrepo.db').absolute()}"

    @property
    def base_url(self) -> str:
        """``public_url`` without a trailing slash, ready to have paths appended."""
        return str(self.public_url).rstrip("/")

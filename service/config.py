"""One validated settings object for every rnntune process (API, worker, CLI).

Every field is read from the environment with the prefix ``RNNTUNE_`` (``RNNTUNE_DATABASE_URL``,
``RNNTUNE_API_URL``, ...) or from a ``.env`` file in the working directory. Nothing reads settings
at import time: call :func:`get_settings` (or build ``Settings(...)`` in tests) and pass it down.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("rnntune-data")
POSTGRES_DRIVER = "postgresql+psycopg2"  # psycopg2-binary is what rnntune depends on
POSTGRES_ALIASES = ("postgres", "postgresql")


class Settings(BaseSettings):
    # hide_input_in_errors: a bad setting is reported by name, never with its value (URLs hold
    # passwords, api_tokens holds tokens).
    model_config = SettingsConfigDict(env_prefix="RNNTUNE_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Storage: one database holds Optuna's tables and ours (rnntune_*).
    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'rnntune.db'}",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg2://... to distribute",
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="artifacts and the SQLite file")

    # Connections per process: our engine and Optuna's each hold up to pool + overflow.
    db_pool_size: int = Field(default=2, ge=1, description="connections each engine keeps open (ours, Optuna's)")
    db_max_overflow: int = Field(default=2, ge=0, description="extra connections each engine opens under load")

    # API.
    dashboard_writable: bool = Field(default=False, description="allow the dashboard's write routes")
    api_tokens: str | None = Field(
        default=None, description="bearer tokens, comma-separated, or a file with one per line; unset: open"
    )
    max_body_kb: int = Field(default=1024, ge=1, description="largest request body but uploads (KiB)")
    max_trials_per_study: int = Field(default=10000, ge=1, description="largest budget.n_trials accepted")
    max_grid_size: int = Field(default=100000, ge=1, description="largest grid a grid search may span")
    max_epochs_per_trial: int = Field(default=1000, ge=1, description="largest budget.max_epochs accepted")
    max_upload_mb: float = Field(default=100.0, gt=0, description="largest data file POST /v1/datasets accepts (MiB)")

    # Client side (rnntune submit / status).
    api_url: str = "http://127.0.0.1:8000"

    # Worker behaviour.
    poll_interval_s: float = Field(default=1.0, gt=0, description="idle worker's claim period")
    lease_s: float = Field(default=90.0, gt=0, description="ticket lease; renewed every lease_s/4")
    heartbeat_interval_s: int = Field(default=10, ge=1, description="Optuna trial heartbeat")
    grace_period_s: int = Field(default=60, ge=2, description="stale after this without heartbeat")
    max_retries: int = Field(default=2, ge=0, description="retries of a trial whose worker died")
    torch_threads: int | None = Field(default=None, ge=1, description="None: cores / local workers")

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        """Normalise what hosting providers hand out (``postgres://``, ``postgresql://``) to the
        driver rnntune installs: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("expected a URL such as sqlite:///path or postgresql://user@host/db")
        if scheme in POSTGRES_ALIASES:
            return f"{POSTGRES_DRIVER}://{rest}"
        if scheme.split("+")[0] not in ("sqlite", "postgresql"):
            # the scheme only: the rest of a URL may hold a password
            raise ValueError(f"only sqlite:/// and postgresql:// URLs are supported, but got {scheme}://")
        return url

    @model_validator(mode="after")
    def _lease_outlives_heartbeat(self) -> Settings:
        # A requeued ticket must find its dead trial already stale, so that the retry (same
        # params) is what the next worker picks up, not a fresh trial beside a zombie.
        if self.lease_s <= self.grace_period_s + self.heartbeat_interval_s:
            raise ValueError(
                "lease_s must exceed grace_period_s + heartbeat_interval_s, but got "
                f"{self.lease_s=}, {self.grace_period_s=}, {self.heartbeat_interval_s=}"
            )
        return self

    @field_validator("api_tokens")
    @classmethod
    def _tokens_load(cls, value: str | None) -> str | None:
        load_tokens(value)  # a missing file or a short token fails at start, not per request
        return value

    @property
    def tokens(self) -> list[str]:
        return load_tokens(self.api_tokens)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


def load_tokens(value: str | None) -> list[str]:
    """``RNNTUNE_API_TOKENS``: comma-separated tokens, or the path of a file with one per line."""
    if not value or not value.strip():
        return []
    candidate = Path(value.strip())
    if "," not in value and candidate.is_file():
        lines = candidate.read_text(encoding="utf-8").splitlines()
        tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        tokens = [t.strip() for t in value.split(",") if t.strip()]
    short = [t for t in tokens if len(t) < 16]
    if short:
        raise ValueError(f"api tokens must be at least 16 characters, but {len(short)} are shorter")
    return tokens


@lru_cache
def get_settings() -> Settings:
    return Settings()

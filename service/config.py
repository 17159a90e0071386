"""One validated settings object for every rnntune process (API, worker, CLI).

Every field is read from the environment with the prefix ``RNNTUNE_`` (``RNNTUNE_DATABASE_URL``,
``RNNTUNE_API_URL``, ...) or from a ``.env`` file in the working directory. Nothing reads settings
at import time: call :func:`get_settings` (or build ``Settings(...)`` in tests) and pass it down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rnntune.service.spec import Limits, resolve_roots
from rnntune.service.trials.child import parse_patterns

if TYPE_CHECKING:
    from rnntune.models.files import FileLimits

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
        default=None,
        description="bearer tokens (a secret, or name:role:secret with role admin, user or read), "
        "comma-separated, or a file with one per line; unset: open",
    )
    access: Literal["auto", "shared", "owners"] = Field(
        default="auto",
        description="owners: a study or data set is changed by its creator's token name or an admin, read "
        "tokens only read; shared: every token may do anything; auto: owners once a token has a name and role",
    )
    max_body_kb: int = Field(default=1024, ge=1, description="largest request body but uploads (KiB)")
    max_trials_per_study: int = Field(
        default=Limits.max_trials_per_study, ge=1, description="largest budget.n_trials accepted"
    )
    max_grid_size: int = Field(default=Limits.max_grid_size, ge=1, description="largest grid a grid search may span")
    max_epochs_per_trial: int = Field(
        default=Limits.max_epochs_per_trial, ge=1, description="largest budget.max_epochs accepted"
    )
    max_upload_mb: float = Field(default=100.0, gt=0, description="largest data file POST /v1/datasets accepts (MiB)")
    allowed_hosts: str | None = Field(
        default=None,
        description="Host names the API answers, comma-separated ('*': any); unset: loopback names when bound "
        "to loopback, else any",
    )

    # What a spec may make a worker do (docs/security.md). Defaults fit a 24 GiB machine.
    data_roots: str = Field(
        default="", description="directories a spec's paths may name, separated by ':' or ','; empty: no paths"
    )
    allow_root_text: bool = Field(
        default=False,
        description="let text studies train on a file under RNNTUNE_DATA_ROOTS: its vocabulary and label names "
        "then go into the downloadable model file",
    )
    max_spec_kb: int = Field(
        default=Limits.max_spec_kb, ge=1, description="largest spec once parsed and serialised (KiB)"
    )
    max_model_params: int = Field(
        default=Limits.max_model_params,
        ge=1,
        description="largest model the search space's upper bounds imply (parameters)",
    )
    max_batch_elements: int = Field(
        default=Limits.max_batch_elements,
        ge=1,
        description="largest batch x window x width (input features or hidden x directions)",
    )
    max_data_elements: int = Field(
        default=Limits.max_data_elements, ge=1, description="largest generated data set (values, windows included)"
    )
    max_search_option: int = Field(
        default=Limits.max_search_option, ge=1, description="largest number a sampler or pruner option may hold"
    )
    max_selection_runs: int = Field(
        default=Limits.max_selection_runs,
        ge=1,
        description="largest selection top_k x seeds x folds (re-evaluation runs, search trials included)",
    )
    max_upload_elements: int = Field(
        default=2**27,  # = FileLimits().max_elements
        ge=1,
        description="largest number of values in an uploaded .npz / .npy array",
    )
    max_compression_ratio: float = Field(
        default=200.0,  # = FileLimits().max_compression_ratio
        gt=1,
        description="largest uncompressed / compressed size of an .npz member",
    )
    max_columns: int = Field(
        default=4096,  # = FileLimits().max_columns
        ge=2,
        description="widest CSV header (or most distinct JSONL keys) an uploaded or root-held file may have",
    )
    max_classes: int = Field(
        default=Limits.max_classes,  # = FileLimits().max_classes
        ge=2,
        description="most classes a classification file may imply (an .npz's largest label + 1, a text file's labels)",
    )
    max_vocab: int = Field(
        default=Limits.max_vocab,  # = FileLimits().max_vocab
        ge=2,
        description="largest text vocabulary (tokens): the most frequent kept when data.params.max_size is unset",
    )
    max_text_length: int = Field(
        default=Limits.max_text_length,  # = FileLimits().max_text_length
        ge=1,
        description="most tokens kept per text (the padded length) when max_length is unset, and its largest value",
    )
    max_text_cells: int = Field(
        default=Limits.max_text_cells,  # = FileLimits().max_text_cells
        ge=1,
        description="most padded token ids of a text data set: rows x padded length (8 bytes each; 2**27 = 1 GiB)",
    )
    max_initial_trials: int = Field(
        default=Limits.max_initial_trials, ge=1, description="most initial_trials entries a spec may give"
    )
    # Study lifecycle (service/studies/ops.py, service/studies/warm_start.py; docs/studies.md).
    max_warm_start_studies: int = Field(
        default=Limits.max_warm_start_studies, ge=1, description="most studies a spec's warm_start.from may name"
    )
    max_warm_start_trials: int = Field(
        default=Limits.max_warm_start_trials,
        ge=1,
        description="largest warm_start.top_k (trials taken from each study)",
    )
    max_warm_start_history: int = Field(
        default=1000,
        ge=0,
        description="most earlier trials given to a warm-started study's sampler as its history (per source study)",
    )
    delete_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="DELETE /v1/studies/{name}?force=true: how long to wait for workers to stop its trials",
    )
    # A study's result (service/trials/finalize.py, docs/baselines.md).
    small_val_split: int = Field(
        default=100,
        ge=0,
        description="a val split with fewer samples gets a warning at submit and in the result "
        "(recommending selection with folds); 0: never",
    )
    baseline_max_elements: int = Field(
        default=2**25,  # = rnntune.models.baselines.DEFAULT_MAX_ELEMENTS
        ge=1,
        description="largest train split (values) the linear baselines are fitted on; larger: skipped, saying so",
    )

    # Client side (rnntune submit / status).
    api_url: str = "http://127.0.0.1:8000"

    # Worker behaviour.
    poll_interval_s: float = Field(default=1.0, gt=0, description="idle worker's claim period")
    lease_s: float = Field(
        default=90.0,
        gt=0,
        description="ticket lease, renewed every lease_s/4 (at most 5 s); a worker silent this long is lost and "
        "its trial retried with the same parameters",
    )
    max_retries: int = Field(default=2, ge=0, description="retries of a trial whose worker died")
    torch_threads: int | None = Field(default=None, ge=1, description="None: cores / local workers")

    # Command trials (objective.command): code execution, so off unless the operator allows it.
    command_dirs: str | None = Field(
        default=None,
        description="directories (os.pathsep- or comma-separated) whose scripts a worker may run as command "
        "trials; unset: it runs none (rnntune worker --allow-commands DIR adds to it)",
    )
    max_command_timeout_s: float = Field(
        default=86400.0, gt=0, description="largest objective.timeout_s accepted, and the limit when a spec sets none"
    )
    command_grace_s: float = Field(default=10.0, gt=0, description="SIGTERM to SIGKILL for a stopped command child")
    command_env: str = Field(
        default="",
        description="worker environment variables a command child gets besides PATH, HOME, locale, CUDA_* & co. "
        "(names or patterns such as AWS_*, comma-separated); never RNNTUNE_DATABASE_URL or the API tokens",
    )

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

    @field_validator("data_roots")
    @classmethod
    def _roots_exist(cls, value: str) -> str:
        resolve_roots(value)  # a relative root fails at start, not per spec
        return value

    @field_validator("command_env")
    @classmethod
    def _env_patterns(cls, value: str) -> str:
        parse_patterns(value)  # naming the database URL or a token fails at start
        return value

    @field_validator("api_tokens")
    @classmethod
    def _tokens_load(cls, value: str | None) -> str | None:
        parse_tokens(value)  # a missing file, a short token or a bad name fails at start, not per request
        return value

    @model_validator(mode="after")
    def _owners_need_tokens(self) -> Settings:
        if self.access == "owners" and not self.tokens:
            raise ValueError("access='owners' needs tokens to tell owners apart: set RNNTUNE_API_TOKENS")
        return self

    @property
    def tokens(self) -> list[Token]:
        return parse_tokens(self.api_tokens)

    @property
    def owners_enforced(self) -> bool:
        """Roles and owners apply (docs/security.md, "Owners and roles"): ``RNNTUNE_ACCESS=owners``,
        or ``auto`` with at least one ``name:role:secret`` token; else every token may do anything."""
        if self.access == "auto":
            return any(t.name is not None for t in self.tokens)
        return self.access == "owners"

    @property
    def roots(self) -> list[str]:
        """``RNNTUNE_DATA_ROOTS`` as resolved directories (symlinks followed)."""
        return resolve_roots(self.data_roots)

    @property
    def limits(self) -> Limits:
        """What this server lets a spec ask for (``service.spec`` checks specs against it)."""
        return Limits(
            max_trials_per_study=self.max_trials_per_study,
            max_epochs_per_trial=self.max_epochs_per_trial,
            max_grid_size=self.max_grid_size,
            max_spec_kb=self.max_spec_kb,
            max_model_params=self.max_model_params,
            max_batch_elements=self.max_batch_elements,
            max_data_elements=self.max_data_elements,
            max_search_option=self.max_search_option,
            max_selection_runs=self.max_selection_runs,
            max_classes=self.max_classes,
            max_vocab=self.max_vocab,
            max_text_length=self.max_text_length,
            max_text_cells=self.max_text_cells,
            max_initial_trials=self.max_initial_trials,
            max_warm_start_studies=self.max_warm_start_studies,
            max_warm_start_trials=self.max_warm_start_trials,
        )

    @property
    def file_limits(self) -> FileLimits:
        """What an uploaded (or root-held) array file may hold (``rnntune.models.files``)."""
        from rnntune.models.files import FileLimits

        return FileLimits(
            max_elements=self.max_upload_elements,
            max_compression_ratio=self.max_compression_ratio,
            max_columns=self.max_columns,
            max_classes=self.max_classes,
            max_vocab=self.max_vocab,
            max_text_length=self.max_text_length,
            max_text_cells=self.max_text_cells,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"


ROLES = ("admin", "user", "read")
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Token:
    """One entry of ``RNNTUNE_API_TOKENS``: ``name:role:secret``, or a bare secret (no name, admin)."""

    secret: str = field(repr=False)  # never in a log line or a traceback
    name: str | None = None
    role: str = "admin"


def parse_token(entry: str) -> Token:
    """``name:role:secret`` when the middle field is a role (``admin``, ``user``, ``read``), else
    the whole entry is a bare secret, as before names and roles existed."""
    name, sep, rest = entry.partition(":")
    role, sep2, secret = rest.partition(":")
    if sep and sep2 and role.lower() in ROLES:
        if not TOKEN_NAME_RE.fullmatch(name):
            raise ValueError("api token names are letters, digits, '.', '_', '@', '-' (at most 64), but one is not")
        return Token(secret=secret, name=name, role=role.lower())
    return Token(secret=entry)


def parse_tokens(value: str | None) -> list[Token]:
    tokens = [parse_token(entry) for entry in load_tokens(value)]
    short = [t for t in tokens if len(t.secret) < 16]
    if short:
        raise ValueError(f"api tokens must be at least 16 characters, but {len(short)} are shorter")
    roles: dict[str, str] = {}
    for t in tokens:
        if t.name is not None and roles.setdefault(t.name, t.role) != t.role:
            raise ValueError(f"api token name {t.name!r} is given two roles")
    return tokens


def load_tokens(value: str | None) -> list[str]:
    """``RNNTUNE_API_TOKENS``: comma-separated entries, or the path of a file with one per line."""
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
    return tokens  # the entries as written: parse_tokens reads names and roles


@lru_cache
def get_settings() -> Settings:
    return Settings()


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db``: a URL fit to print or log."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"

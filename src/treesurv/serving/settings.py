"""The service's settings: one pydantic-settings class, read from `TREESURV_*`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from treesurv.core.config import DEFAULT_PATHS


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix `TREESURV_`)."""

    model_config = SettingsConfigDict(env_prefix="TREESURV_", extra="ignore")

    model_dir: Path = Field(
        DEFAULT_PATHS.bundle, description="Model bundle directory served (and watched)."
    )
    api_key: SecretStr | None = Field(
        None, description="Key for the admin endpoints (never logged)."
    )
    api_key_file: Path | None = Field(
        None, description="File holding the admin key (e.g. a mounted secret)."
    )
    max_batch: int = Field(1000, ge=1, description="Most instances in one request.")
    max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_upload_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Largest file the web page's upload (`POST /ui/score`) accepts, in "
        "bytes (413 above, naming the limit and the file's size). The page reads it from "
        "/ui/form.json and refuses a larger file before sending it.",
    )
    max_uploads: int = Field(
        2,
        ge=1,
        description="Uploaded files a worker scores at once (in threads, off the event "
        "loop); one more gets 503 with Retry-After. Uploads bypass the admission queue "
        "of the prediction routes (`max_concurrency`, `max_pending_bytes`), so a large "
        "file never holds a slot of the API.",
    )
    watch_interval: float = Field(
        2.0, ge=0, description="Seconds between checks of the bundle's manifest; 0 disables."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (none by default)."
    )
    prediction_log_dir: Path | None = Field(
        None,
        description="Directory of the prediction log (JSON Lines, one line per "
        "request); unset or empty: no log. `make serve` sets logs/predictions.",
    )
    prediction_log_queue: int = Field(
        10_000, ge=1, description="Requests the log queue holds before it drops (and counts)."
    )
    prediction_log_writer: Literal["process", "thread"] = Field(
        "process",
        description="Who encodes and writes the log lines: a writer process (off the "
        "server's interpreter, the default) or a thread of the server (where a worker "
        "may not start processes).",
    )
    drift_report: Path | None = Field(
        None, description="The drift job's drift.json, shown as gauges in /metrics."
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry instrumentation (to the globally "
        "configured providers). Off by default: /metrics serves Prometheus, and the "
        "hook checks the providers on every request.",
    )
    shutdown_grace: float = Field(
        20.0,
        ge=0,
        description="Seconds in-flight requests get to finish after SIGTERM before they "
        "are cancelled; the prediction log is flushed after them.",
    )

    max_concurrency: int = Field(
        4,
        ge=1,
        description="Requests carrying work (POST) a worker works on at once; the "
        "others wait in its queue.",
    )
    max_queue: int = Field(
        32,
        ge=0,
        description="Requests that may wait for a slot; past it a request gets 503 with "
        "Retry-After at once (load shed instead of queued).",
    )
    max_pending_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Body bytes the requests worked on and waiting may hold together "
        "(about 200 bytes a row, so five full batches): a huge batch counts as what it "
        "costs; past it, 503. The queue it allows is what sets the latency of the requests "
        "served under overload. A request always runs when a slot is free and none waits.",
    )
    queue_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds a request may wait for a slot; after that it is dropped "
        "with 503 before it is computed.",
    )

    @field_validator("prediction_log_dir", "drift_report", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # TREESURV_PREDICTION_LOG_DIR= (empty) turns the log off.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    def admin_key(self) -> str | None:
        """The admin key from the environment or its file; None disables the admin API."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_file is not None:
            try:
                key = self.api_key_file.read_text().strip()
            except OSError:
                return None
            return key or None
        return None

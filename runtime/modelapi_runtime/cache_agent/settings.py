"""Cache agent settings (pydantic-settings): every field is an environment variable MODELAPI_CACHE_<FIELD>."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class CacheAgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELAPI_CACHE_", extra="ignore", frozen=True)

    dir: str = Field(default="/var/cache/modelapi", description="The cache directory (the node's hostPath).")
    max_mib: int = Field(
        default=51200, ge=1, description="Bound of the cache, in MiB; least recently used entries go first."
    )
    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104 (the node's addresses)
    port: int = Field(default=8089, ge=1, le=65535, description="Port model pods reach at their node's address.")
    allowed_endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Stores the agent may call (comma-separated origins: https://s3.example.com:443, or "
        "https://*.amazonaws.com for every host under a domain); a presigned URL elsewhere is refused (403), so no "
        "pod can make the agent reach anything else from the node's network. Empty: none (every pod downloads "
        "itself).",
    )
    max_connections: int = Field(default=64, ge=1, le=4096, description="Requests served at once; past it, 503.")
    download_concurrency: int = Field(default=8, ge=1, le=64, description="Parallel ranged GETs of one fill.")
    download_part_mib: int = Field(default=16, ge=1, le=1024, description="Size of one ranged GET, in MiB.")
    fill_stall_seconds: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="A pod waiting on a fill that moves no byte for this long is answered "
        "with a short stream (it retries or downloads itself).",
    )
    pods_dir: str | None = Field(
        default=None,
        description="The kubelet's pods directory (<kubelet root>/pods) as mounted in the agent: a verified entry is "
        "then placed in the asking pod's volume (a hard link, or an in-kernel copy) instead of streamed. Unset: "
        "always streamed.",
    )
    pod_volume: str = Field(
        default="models", description="The model pods' emptyDir volume that entries are placed in (its name)."
    )
    log_level: str = Field(default="INFO", description="Python log level.")

    @field_validator("allowed_endpoints", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

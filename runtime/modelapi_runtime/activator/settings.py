"""Activator settings (pydantic-settings): every field is an environment variable MODELAPI_ACTIVATOR_<FIELD>."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ActivatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELAPI_ACTIVATOR_", extra="ignore", frozen=True)

    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104 (a pod's own address)
    port: int = Field(default=8080, ge=1, le=65535, description="Port for held and forwarded requests.")
    health_port: int = Field(default=8081, ge=1, le=65535, description="Port of /healthz (probes).")
    queue_limit: int = Field(
        default=1000, ge=1, le=100_000, description="Most requests held at once; past it, 503 with Retry-After."
    )
    hold_timeout_seconds: float = Field(
        default=120, gt=0, le=3600, description="Longest a request waits for a ready replica; past it, 503."
    )
    max_body_mib: int = Field(default=64, ge=1, le=1024, description="Largest request body accepted.")
    max_held_mib: int = Field(
        default=128,
        ge=1,
        le=65536,
        description="Most request-body bytes held at once (MiB; keep it under the pod's memory limit); past it, 503 "
        "with Retry-After. A body of unknown length counts as max_body_mib until it has arrived.",
    )
    body_timeout_seconds: float = Field(
        default=60, gt=0, le=3600, description="Longest a request body may take to arrive; past it, 408."
    )
    forward_timeout_seconds: float = Field(
        default=300, gt=0, le=3600, description="Longest the model may take to answer a forwarded request."
    )
    poll_seconds: float = Field(
        default=0.25, gt=0, le=10, description="How often the model's pods are read while requests are held."
    )
    probe_timeout_seconds: float = Field(
        default=1,
        gt=0,
        le=30,
        description="Timeout of asking a starting pod's runtime whether it is ready (while requests are held).",
    )
    demand_seconds: float = Field(
        default=2, gt=0, le=60, description="How often the demand annotation is written again while requests wait."
    )
    retry_after_seconds: int = Field(default=5, ge=1, le=3600, description="Retry-After of a 503.")
    cluster_domain: str = Field(default="cluster.local", description="The cluster's DNS domain (Host names).")
    kubeconfig: str | None = Field(
        default=None, description="A kubeconfig file; unset: the pod's ServiceAccount (in-cluster)."
    )
    log_level: str = Field(default="INFO", description="Python log level.")

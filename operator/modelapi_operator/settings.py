"""Operator settings (pydantic-settings, env prefix MODELAPI_OPERATOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CPU_IMAGE = "modelapi/runtime:0.1.0"
DEFAULT_GPU_IMAGE = "modelapi/runtime-gpu:0.1.0"


class OperatorSettings(BaseSettings):
    """How the operator runs; every field is also an environment variable, e.g. MODELAPI_OPERATOR_CPU_IMAGE."""

    model_config = SettingsConfigDict(env_prefix="MODELAPI_OPERATOR_", extra="ignore", frozen=True)

    cpu_image: str = Field(default=DEFAULT_CPU_IMAGE, description="Default runtime image for CPU models.")
    gpu_image: str = Field(default=DEFAULT_GPU_IMAGE, description="Default runtime image for GPU models.")
    prometheus_url: str | None = Field(default=None, description="Prometheus base URL for canary analysis.")

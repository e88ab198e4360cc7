"""``GET /openapi.json``: the OpenAPI document of the health, metadata and /metrics routes, built by FastAPI.

The routes themselves are plain Starlette ones (:func:`~modelapi_runtime.routes.build_routes`); importing FastAPI
(its OpenAPI models, dependency machinery and OpenTelemetry API) cost every start about 0.15 CPU-s, so this module is
imported on the document's first request only. The operations below describe those routes (their names, paths and
answers give the document's operation ids, summaries and schemas, the same as when they were FastAPI routes) and
are never called: a test checks that both declare the same paths.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Response
from fastapi.responses import JSONResponse

from modelapi_runtime import __version__
from modelapi_runtime.limits import MAX_READY_WAIT_S

TITLE = "modelapi runtime"


def describe() -> APIRouter:
    router = APIRouter()

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        raise NotImplementedError

    @router.get("/v2/health/ready", response_model=None)
    async def ready(
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_READY_WAIT_S,
                description="seconds to hold a not-ready answer for the model to become ready",
            ),
        ] = 0,
    ) -> dict[str, bool] | JSONResponse:
        raise NotImplementedError

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        raise NotImplementedError

    @router.get("/v2/models/{name}", response_model=None)
    @router.get("/v2/models/{name}/versions/{version}", response_model=None)
    async def model_metadata(name: str) -> dict[str, Any]:
        raise NotImplementedError

    @router.get("/v2/models/{name}/ready", response_model=None)
    @router.get("/v2/models/{name}/versions/{version}/ready", response_model=None)
    async def model_ready(name: str) -> dict[str, Any] | JSONResponse:
        raise NotImplementedError

    @router.get("/v1/models/{name}", response_model=None)
    async def v1_model(name: str) -> dict[str, Any] | JSONResponse:
        raise NotImplementedError

    @router.get("/metrics")
    async def metrics() -> Response:
        raise NotImplementedError

    return router


def document() -> dict[str, Any]:
    """The OpenAPI document ``GET /openapi.json`` answers."""
    app = FastAPI(title=TITLE, version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.include_router(describe())
    return app.openapi()

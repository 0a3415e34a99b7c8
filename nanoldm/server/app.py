"""``create_app(service)``: the FastAPI application of ``nanoldm serve``.

What it holds, outermost first:

- HTTP basic auth on every route, the page included, when the settings name users (``auth.py``);
- a body limit (``MAX_BODY``): a larger request is a 422, read no further;
- the routers: A1111's ``/sdapi/v1`` (``routes.py``) and nanoldm's own (``ROUTERS``: add a router there);
- the web page: ``static/`` served at ``/`` when the package has it.

Validation errors answer 422 with one line naming the field (and the list of problems, without echoing the
input back). OpenAPI is at ``/docs``.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from nanoldm.server.auth import BasicAuth
from nanoldm.server.explain_routes import router as explain_router
from nanoldm.server.limits import BodyLimit
from nanoldm.server.page_routes import router as page_router
from nanoldm.server.routes import router as sdapi_router
from nanoldm.server.service import Service
from nanoldm.server.settings import MAX_BODY

STATIC = Path(__file__).parent / "static"
ROUTERS = (sdapi_router, explain_router, page_router)  # more faces of the server (e.g. /nanoldm/v1/...) are added here


def create_app(service: Service, *, static_dir: Path | None = STATIC) -> FastAPI:
    """The app over a ready service (``Service(ServerSettings(...))``); run it with uvicorn."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.queue.shutdown()

    app = FastAPI(title="nanoldm", description="A1111-compatible API of nanoldm", version="1", lifespan=lifespan)
    app.state.service = service
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    if static_dir is not None and static_dir.is_dir():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="static")  # after the API routes
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    if service.settings.api_auth:
        app.add_middleware(BasicAuth, credentials=service.settings.api_auth)  # added last: runs first
    return app


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in error.errors()]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    return JSONResponse(status_code=422, content={"detail": f"{where}: {first['msg']}", "errors": problems})

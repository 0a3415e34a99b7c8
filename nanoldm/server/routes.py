"""A1111's ``/sdapi/v1`` routes over a :class:`~nanoldm.server.service.Service`.

Generation routes check and decode a request off the event loop, queue the job (503 when the queue is full),
and encode the images; a bad request is a 422 with one line naming the problem, a job that fails a 500 with one
line, and the server keeps serving either way.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from fastapi import APIRouter, Body, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from nanoldm.checkpoint.formats import read_metadata
from nanoldm.server import responses
from nanoldm.server.codec import decode_raw, encode_png
from nanoldm.server.jobs import QueueFull
from nanoldm.server.sampler_names import sampler_items, scheduler_items
from nanoldm.server.schemas import (EmbeddingsResponse, HypernetworkItem, ImagesResponse, Img2ImgRequest,
                                    LoraItem, MemoryResponse, PNGInfoRequest, PNGInfoResponse, ProgressResponse, SamplerItem,
                                    SchedulerItem, SDModelItem, Txt2ImgRequest)
from nanoldm.server.service import Service
from nanoldm.server.settings import is_loopback

log = logging.getLogger("nanoldm.server")
router = APIRouter(prefix="/sdapi/v1")


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@contextmanager
def http_errors() -> Iterator[None]:
    """The block's errors as one-line HTTP errors: a full queue 503 (with Retry-After), bad input (ValueError, the
    library's word for it) 422, anything else 500 (logged with its traceback; the server goes on)."""
    try:
        yield
    except QueueFull as e:
        raise HTTPException(503, one_line(e), headers={"Retry-After": str(e.retry_after)}) from None
    except ValueError as e:
        raise HTTPException(422, one_line(e)) from None
    except HTTPException:
        raise
    except Exception as e:
        log.exception("request failed")
        raise HTTPException(500, f"{type(e).__name__}: {one_line(e)}") from None


async def in_thread(fn: Callable, *args) -> Any:
    """``fn(*args)`` off the event loop (decoding, checks, folder reads), errors as in :func:`http_errors`."""
    with http_errors():
        return await run_in_threadpool(fn, *args)


async def queued(service: Service, fn: Callable, *args) -> Any:
    """``fn(*args)`` as a job of the service's queue (anything that uses the model), errors as in
    :func:`http_errors`."""
    with http_errors():
        return await service.queue.run(fn, *args)


def service_of(request: Request) -> Service:
    return request.app.state.service


async def _generate(request: Request, req, plan: Callable) -> ImagesResponse:
    service = service_of(request)
    job = await in_thread(plan, req)
    images = await queued(service, service.execute, job)
    info = responses.generation_info(job, images, service.checkpoint.model_name, service.checkpoint.hash, req.styles)
    encoded = await run_in_threadpool(lambda: [encode_png(im) for im in images]) if req.send_images else []
    if service.settings.save_dir is not None:
        await in_thread(service.save, images)
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:  # A1111 does not echo them back
        parameters.update(init_images=None, mask=None)
    return ImagesResponse(images=encoded, parameters=parameters, info=info)


@router.post("/txt2img", response_model=ImagesResponse)
async def txt2img(request: Request, req: Txt2ImgRequest) -> ImagesResponse:
    return await _generate(request, req, service_of(request).plan_txt2img)


@router.post("/img2img", response_model=ImagesResponse)
async def img2img(request: Request, req: Img2ImgRequest) -> ImagesResponse:
    return await _generate(request, req, service_of(request).plan_img2img)


@router.post("/png-info", response_model=PNGInfoResponse)
async def png_info(req: PNGInfoRequest) -> dict:
    image = await in_thread(decode_raw, req.image, "image")
    return responses.png_info(image)


@router.get("/progress", response_model=ProgressResponse)
def progress(request: Request, skip_current_image: bool = False) -> dict:
    service = service_of(request)
    return responses.progress_state(service.monitor, service.job_kind, with_image=not skip_current_image)


@router.post("/interrupt")
def interrupt(request: Request) -> dict:
    if (monitor := service_of(request).monitor) is not None:
        monitor.interrupt()
    return {}


@router.post("/skip")
def skip(request: Request) -> dict:
    if (monitor := service_of(request).monitor) is not None:
        monitor.skip()
    return {}


@router.get("/options")
def get_options(request: Request) -> dict:
    return service_of(request).options()


@router.post("/options")
async def set_options(request: Request, values: dict[str, Any] = Body(...)) -> dict:
    service = service_of(request)
    entry = await in_thread(service.set_options, values)
    if entry is not None:
        await queued(service, service.switch, entry)
    return {}


@router.get("/sd-models", response_model=list[SDModelItem])
def sd_models(request: Request) -> list[dict]:
    return [{"title": e.title, "model_name": e.model_name, "hash": e.hash, "sha256": None, "filename": e.name,
             "config": None} for e in service_of(request).catalog.entries]


@router.post("/refresh-checkpoints")
async def refresh_checkpoints(request: Request) -> dict:
    await in_thread(service_of(request).catalog.refresh)
    return {}


@router.get("/samplers", response_model=list[SamplerItem])
def samplers() -> list[dict]:
    return sampler_items()


@router.get("/schedulers", response_model=list[SchedulerItem])
def schedulers() -> list[dict]:
    return scheduler_items()


@router.get("/embeddings", response_model=EmbeddingsResponse)
def embeddings(request: Request) -> dict:
    service = service_of(request)
    return {part: {token: {"shape": width, "vectors": vectors} for token, (vectors, width) in table.items()}
            for part, table in (("loaded", service.embeddings), ("skipped", service.skipped_embeddings))}


@router.get("/hypernetworks", response_model=list[HypernetworkItem])
async def hypernetworks(request: Request) -> list[dict]:
    service = service_of(request)
    files = await in_thread(service.pipe.hypernetworks.files)
    folder = service.settings.hypernetwork_dir
    return [{"name": name, "path": path.relative_to(folder).as_posix()} for name, path in sorted(files.items())]


@router.get("/loras", response_model=list[LoraItem])
async def loras(request: Request) -> list[dict]:
    """The LoRA files of ``--lora-dir`` that ``<lora:name:w>`` prompt tags can name (A1111's list)."""
    service = service_of(request)
    files = await in_thread(service.pipe.loras.files)
    folder = service.settings.lora_dir
    return [{"name": name, "alias": name, "path": path.relative_to(folder).as_posix(),
             "metadata": await in_thread(_metadata, path)} for name, path in sorted(files.items())]


def _metadata(path) -> dict[str, str]:
    """A file's safetensors metadata (kohya's ss_* fields); {} for a .pt or an unreadable file."""
    try:
        return read_metadata(path)
    except ValueError:
        return {}


@router.post("/refresh-loras")
def refresh_loras() -> None:
    """A1111's rescan: the folder is read on every request here, so there is nothing to refresh."""


@router.get("/memory", response_model=MemoryResponse)
def memory() -> dict:
    return responses.memory()


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict:
    """The server's settings, without secrets or paths."""
    s = service_of(request).settings
    return {"api": True, "nowebui": False, "listen": not is_loopback(s.host),
            "server_name": s.host, "port": s.port, "api_auth": "***" if s.api_auth else None,
            "queue_size": s.queue_size, "max_size": s.max_size, "dtype": s.dtype, "insecure": s.insecure,
            "save_dir": s.save_dir is not None}


@router.get("/scripts")
def scripts() -> dict:
    """No A1111 scripts here (clients such as webuiapi ask at start-up)."""
    return {"txt2img": [], "img2img": []}

"""``POST /nanoldm/v1/explain``: "See inside" one generation over HTTP (what ``nanoldm explain`` writes as files).

The request is A1111's txt2img request (the same fields; batch size and ``n_iter`` are taken as 1: one image is
explained). The job waits in the same queue as every generation, and ``/sdapi/v1/progress`` and ``/interrupt``
work on it. The answer carries base64 PNGs: the image (with its infotext), the trajectory strip and each step
enlarged, and per prompt word its attention map laid over the image, its share of the attention and its context
columns.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from nanoldm.pipelines.explain import Explanation, TrajectoryMonitor, explain
from nanoldm.pipelines.explain_pictures import enlarge, strip_picture, word_picture
from nanoldm.server.codec import encode_png
from nanoldm.server.routes import in_thread, queued, service_of
from nanoldm.server.schemas import Txt2ImgRequest
from nanoldm.server.service import Job, Service

router = APIRouter(prefix="/nanoldm/v1")
STEP_SIZE = 128  # pixels a side (about) of each trajectory step sent


class ExplainedWord(BaseModel):
    word: str  # as the prompt spells it, lower-cased (BPE pieces joined)
    share: float  # the word's share of the image's attention, averaged over pixels, in [0, 1]
    columns: list[int]  # its tokens' positions in the context
    image: str  # base64 PNG: the attention map over the image, labelled


class ExplainResponse(BaseModel):
    image: str  # base64 PNG with its infotext, as /sdapi/v1/txt2img returns it
    info: str  # the infotext
    seed: int
    trajectory: str  # base64 PNG: the x0 prediction after each step, left to right
    steps: list[str]  # base64 PNGs: each step's x0 prediction, enlarged
    words: list[ExplainedWord]


@router.post("/explain", response_model=ExplainResponse)
async def explain_route(request: Request, req: Txt2ImgRequest) -> ExplainResponse:
    service = service_of(request)
    job = await in_thread(service.plan_txt2img, req.model_copy(update={"batch_size": 1, "n_iter": 1}))
    explanation = await queued(service, run_explain, service, job)
    return await in_thread(encode, explanation)


def run_explain(service: Service, job: Job) -> Explanation:
    """On the job thread: the job's txt2img, seen from inside, watched by the service's progress route."""
    if not job.opts.prompt.strip():
        raise ValueError("prompt: empty, so there are no words to see attention for")
    if job.model is not None:
        service.switch(job.model)
    monitor = TrajectoryMonitor()
    service.monitor, service.job_kind = monitor, "explain"
    return explain(service.pipe, job.opts, monitor=monitor)[0]


def encode(e: Explanation) -> ExplainResponse:
    words = [ExplainedWord(word=w.word, share=w.share, columns=w.columns, image=encode_png(word_picture(e.image, w)))
             for w in e.words]
    return ExplainResponse(image=encode_png(e.image), info=e.image.info["parameters"], seed=e.image.info["seed"],
                           trajectory=encode_png(strip_picture(e)),
                           steps=[encode_png(enlarge(step, STEP_SIZE)) for step in e.trajectory], words=words)

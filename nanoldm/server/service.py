"""The server's state and work, with no HTTP in it: :class:`Service` holds the loaded pipeline, the checkpoint
catalogue, the job queue and the running job's monitor. Routes turn requests into :class:`Job` s with
``plan_txt2img`` / ``plan_img2img`` (every check and decode happens there, before the job waits in the queue),
run them with ``queue.run(service.execute, job)``, and turn the images back into responses.

Like the command line, the service builds a :class:`~nanoldm.options.GenerateOptions` and calls
``Pipeline.generate``: the same settings give the same pixels as ``nanoldm txt2img``.
"""
from __future__ import annotations

import dataclasses

import math
import random
from dataclasses import dataclass

from PIL import Image

from nanoldm.finetune.embedding_files import Embedding
from nanoldm.finetune.textual_inversion import embedding_vectors, load_embeddings_dir
from nanoldm.options import IMG2IMG_STRENGTH, GenerateOptions, check_sampler
from nanoldm.pipelines.outputs import save_images
from nanoldm.pipelines.pipeline import Pipeline, load_pipeline
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.rng import MAX_SEED
from nanoldm.samplers import get_sampler
from nanoldm.server.catalog import Checkpoint, CheckpointCatalog
from nanoldm.server.codec import decode_image, decode_raw, prepare_mask, resize_for
from nanoldm.server.jobs import JobQueue
from nanoldm.server.schemas import GenerationRequest, Img2ImgRequest, Txt2ImgRequest
from nanoldm.server.settings import ServerSettings

CLIP_SKIP_OPTION = "CLIP_stop_at_last_layers"  # A1111's option names
DISCARD_OPTION = "always_discard_next_to_last_sigma"
MODEL_OPTION = "sd_model_checkpoint"
ETA_OPTION = "eta_ddim"


@dataclass
class Job:
    """One request's work: ``runs`` batches (A1111's ``n_iter``), run r with seeds ``opts.seed + r * batch``."""

    kind: str  # "txt2img" or "img2img"
    opts: GenerateOptions
    runs: int = 1
    image: Image.Image | None = None
    mask: Image.Image | None = None
    model: Checkpoint | None = None  # switch to this checkpoint first


class Service:
    def __init__(self, settings: ServerSettings):
        settings.check()
        self.settings = settings
        self.catalog = CheckpointCatalog(settings.model, settings.models_dir)
        self.queue = JobQueue(settings.queue_size)
        self.monitor: SamplingMonitor | None = None  # the running (or last) job's
        self.job_kind = ""
        self.clip_skip, self.eta_ddim = 1, 0.0  # option defaults a request may override
        self.discard_penultimate = False
        self.embeddings: dict[str, tuple[int, int]] = {}  # token -> (vectors, width)
        self.skipped_embeddings: dict[str, tuple[int, int]] = {}  # token or file name -> (vectors, width)
        self.pipe: Pipeline
        self.checkpoint: Checkpoint
        self.load(self.catalog.default)

    # ---- the model (on the worker thread once serving) ----

    def load(self, entry: Checkpoint) -> None:
        """Load ``entry`` with the server's dtype and device, its embeddings and hypernetwork folder."""
        pipe = load_pipeline(entry.path, device=self.settings.device, dtype=self.settings.dtype)
        pipe.hypernetworks.folder = self.settings.hypernetwork_dir
        pipe.loras.folder = self.settings.lora_dir
        skipped: dict[str, Embedding | None] = {}  # as A1111 starts: an unusable file is skipped and listed
        tokens = (load_embeddings_dir(pipe.model, self.settings.embeddings_dir, skipped)
                  if self.settings.embeddings_dir else [])
        self.embeddings = {token: tuple(embedding_vectors(pipe.model, token).shape) for token in tokens}
        self.skipped_embeddings = {key: (e.vectors.shape[0], e.width) if e is not None else (0, 0)
                                   for key, e in skipped.items()}
        entry.compute_hash()
        self.pipe, self.checkpoint = pipe, entry

    def switch(self, entry: Checkpoint) -> None:
        if entry is not self.checkpoint:
            self.load(entry)

    # ---- requests -> jobs (any thread) ----

    def plan_txt2img(self, req: Txt2ImgRequest) -> Job:
        strength = req.denoising_strength if req.enable_hr and req.denoising_strength is not None else IMG2IMG_STRENGTH
        return Job("txt2img", self._options(req, strength), req.n_iter, model=self._model_override(req))

    def plan_img2img(self, req: Img2ImgRequest) -> Job:
        """The first init image (resized as ``resize_mode`` says) and the mask (inverted, resized, blurred)."""
        if not req.init_images:
            raise ValueError("init_images: at least one base64 encoded image is required")
        opts = self._options(req, req.denoising_strength)
        size = (opts.width, opts.height)
        image = resize_for(decode_image(req.init_images[0], "init_images[0]"), size, req.resize_mode)
        mask = None
        if req.mask:
            both = req.mask_blur  # A1111: mask_blur, when given, sets both directions
            mask = prepare_mask(decode_raw(req.mask, "mask"), size, invert=bool(req.inpainting_mask_invert),
                                mode=req.resize_mode,
                                blur_x=req.mask_blur_x if both is None else both,
                                blur_y=req.mask_blur_y if both is None else both)
            opts = dataclasses.replace(  # the library applies them
                opts, inpainting_fill=req.inpainting_fill, inpaint_full_res=req.inpaint_full_res,
                inpaint_full_res_padding=req.inpaint_full_res_padding)
        return Job("img2img", opts, req.n_iter, image, mask, model=self._model_override(req))

    def _options(self, req: GenerationRequest, strength: float) -> GenerateOptions:
        overrides = req.override_settings or {}
        clip_skip = parse_clip_skip(overrides.get(CLIP_SKIP_OPTION, self.clip_skip))
        discard = parse_bool(DISCARD_OPTION, overrides.get(DISCARD_OPTION, self.discard_penultimate))
        eta = req.eta if req.eta is not None else self.eta_ddim
        for name, size in (("width", req.width), ("height", req.height)):
            if size > self.settings.max_size:
                raise ValueError(f"{name} {size} is above this server's limit of {self.settings.max_size} pixels")
        images = req.n_iter * req.batch_size
        seed = random.randint(0, MAX_SEED - images) if req.seed == -1 else req.seed
        if seed + images - 1 > MAX_SEED:
            raise ValueError(f"seed {seed} + {images} images passes the largest seed, {MAX_SEED}")
        subseed = random.randint(0, MAX_SEED - images) if req.subseed == -1 else req.subseed  # fixed for all runs
        sampler, scheduler = req.sampler(), req.scheduler or "Automatic"
        check_sampler(sampler, scheduler)  # an unknown name lists the valid ones (422)
        opts = GenerateOptions(
            prompt=req.prompt, negative_prompt=req.negative_prompt or "", sampler=sampler, scheduler=scheduler,
            steps=req.steps, cfg_scale=req.cfg_scale, seed=seed, width=req.width, height=req.height,
            batch_size=req.batch_size, clip_skip=clip_skip, strength=strength, eta=eta if _takes_eta(sampler) else 0.0,
            subseed=subseed, subseed_strength=req.subseed_strength, discard_penultimate_sigma=discard,
            seed_resize_from_h=max(req.seed_resize_from_h, 0), seed_resize_from_w=max(req.seed_resize_from_w, 0),
            **(_hires_fields(req) if isinstance(req, Txt2ImgRequest) else {}))
        opts.validate(self.pipe.latent_factor)
        return opts

    def _model_override(self, req: GenerationRequest) -> Checkpoint | None:
        title = (req.override_settings or {}).get(MODEL_OPTION)
        return None if title is None else self.catalog.find(str(title))

    # ---- jobs (the worker thread) ----

    def execute(self, job: Job) -> list[Image.Image]:
        """Run a job's batches under a fresh monitor; an interrupt returns what was made until then."""
        if job.model is not None:
            self.switch(job.model)
        monitor = SamplingMonitor(runs=job.runs)
        self.monitor, self.job_kind = monitor, job.kind
        try:
            return self.pipe.generate_batches(job.opts, job.runs, job.image, job.mask, progress=False,
                                              monitor=monitor)
        finally:
            monitor.end()

    def save(self, images: list[Image.Image]) -> None:
        """Also write the outputs to ``--save-dir`` (never a path a client names)."""
        if self.settings.save_dir is not None:
            save_images(images, self.settings.save_dir)

    # ---- options (A1111's /options) ----

    def options(self) -> dict:
        return {MODEL_OPTION: self.checkpoint.title, "sd_checkpoint_hash": self.checkpoint.hash,
                CLIP_SKIP_OPTION: self.clip_skip, ETA_OPTION: self.eta_ddim, DISCARD_OPTION: self.discard_penultimate,
                "samples_format": "png",
                "sd_vae": "Automatic"}

    def set_options(self, values: dict) -> Checkpoint | None:
        """Check and apply the options nanoldm has (others are ignored, as A1111 ignores unknown ones); returns
        the checkpoint to switch to (on the worker thread), if one is named."""
        clip_skip = parse_clip_skip(values.get(CLIP_SKIP_OPTION, self.clip_skip))
        eta = values.get(ETA_OPTION, self.eta_ddim)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"{ETA_OPTION} must be a finite number >= 0, got {eta!r}")
        discard = parse_bool(DISCARD_OPTION, values.get(DISCARD_OPTION, self.discard_penultimate))
        entry = self.catalog.find(str(values[MODEL_OPTION])) if values.get(MODEL_OPTION) is not None else None
        self.clip_skip, self.eta_ddim, self.discard_penultimate = clip_skip, float(eta), discard
        return entry


def parse_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def parse_clip_skip(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 12:
        raise ValueError(f"{CLIP_SKIP_OPTION} must be a whole number in [1, 12], got {value!r}")
    return value


def _takes_eta(sampler: str) -> bool:
    """DDIM's eta (A1111's ``eta_ddim``); A1111's k-diffusion samplers use their own (``eta_ancestral``, 1)."""
    try:
        return "eta" in get_sampler(sampler).options
    except ValueError:
        return False


def _hires_fields(req: Txt2ImgRequest) -> dict:
    """A1111's Hires. fix fields, as ``GenerateOptions`` has them (``pipelines/hires.py``)."""
    return {"enable_hr": req.enable_hr, "hr_scale": req.hr_scale, "hr_resize_x": req.hr_resize_x,
            "hr_resize_y": req.hr_resize_y, "hr_upscaler": req.hr_upscaler, "hr_prompt": req.hr_prompt,
            "hr_second_pass_steps": req.hr_second_pass_steps, "hr_sampler_name": _same_as_first(req.hr_sampler_name),
            "hr_scheduler": _same_as_first(req.hr_scheduler), "hr_negative_prompt": req.hr_negative_prompt}


def _same_as_first(name: str | None) -> str | None:
    """A1111's UI values "Use same sampler" / "Use same scheduler" mean the first pass's: None."""
    return None if name in ("Use same sampler", "Use same scheduler") else name

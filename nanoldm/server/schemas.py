"""The HTTP API's request and response bodies, under A1111's field names, types and defaults (its
``modules/api/models.py``, version 1.10, and the ``StableDiffusionProcessing`` fields it derives them from).

Fields A1111 has and nanoldm does not use (face restoration, scripts, ...) are declared so
that ``parameters`` echoes a request as A1111 does, and are otherwise ignored; fields A1111 does not know are
ignored too. What nanoldm cannot honour is never an error, but a number that is not finite, or beyond the limits
of ``settings.py``, is: FastAPI answers 422 naming the field.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nanoldm.rng import MAX_SEED
from nanoldm.server.settings import MAX_BATCH, MAX_PROMPT, MAX_STEPS

_A1111 = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True)


class GenerationRequest(BaseModel):
    """What txt2img and img2img share (``StableDiffusionProcessing``)."""

    model_config = _A1111

    prompt: str = Field(default="", max_length=MAX_PROMPT)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT)
    styles: list[str] | None = None
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED)
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"  # A1111's fallback when sampler_name is not given
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=MAX_BATCH)
    n_iter: int = Field(default=1, ge=1, le=MAX_BATCH)
    steps: int = Field(default=50, ge=1, le=MAX_STEPS)
    cfg_scale: float = 7.0
    width: int = Field(default=512, ge=1)
    height: int = Field(default=512, ge=1)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = Field(default=None, ge=0)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None

    def sampler(self) -> str:
        return self.sampler_name or self.sampler_index


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool = False
    denoising_strength: float | None = Field(default=0.75, ge=0, le=1)
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = Field(default="", max_length=MAX_PROMPT)
    hr_negative_prompt: str = Field(default="", max_length=MAX_PROMPT)


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] | None = Field(default=None, max_length=MAX_BATCH)
    resize_mode: int = Field(default=0, ge=0, le=3)  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent
    denoising_strength: float = Field(default=0.75, ge=0, le=1)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = Field(default=4, ge=0, le=64)
    mask_blur_y: int = Field(default=4, ge=0, le=64)
    mask_blur: int | None = Field(default=None, ge=0, le=64)
    mask_round: bool = True
    inpainting_fill: int = Field(default=0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(default=0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = Field(default=False, exclude=True)


class ImagesResponse(BaseModel):
    """txt2img and img2img: base64 PNGs, the request as understood, and A1111's ``info`` JSON string."""

    images: list[str] | None = Field(default=None, description="The generated images in base64 format.")
    parameters: dict
    info: str


class PNGInfoRequest(BaseModel):
    model_config = _A1111
    image: str = Field(description="The base64 encoded PNG image")


class PNGInfoResponse(BaseModel):
    info: str
    items: dict
    parameters: dict


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict
    current_image: str | None = None
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class HypernetworkItem(BaseModel):
    name: str
    path: str | None = None


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str | None = None  # relative to the LoRA folder: the server never shows where its files are
    metadata: dict[str, str] = Field(default_factory=dict)


class EmbeddingItem(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict
    cuda: dict

"""``Pipeline``: a loaded model plus the three ways to generate with it (``generate`` takes a ready
:class:`GenerateOptions`; ``txt2img`` / ``img2img`` / ``inpaint`` take its fields as keywords). Every image
comes back as a PIL image carrying its A1111 infotext in ``image.info["parameters"]`` (written as the PNG
``parameters`` chunk by ``save_png``)."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from PIL import Image

from nanoldm.builtin import BUILTIN_MODEL, builtin_model_path, unknown_words
from nanoldm.checkpoint.load import load_model
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.finetune.extra_networks import extra_networks_applied
from nanoldm.finetune.hypernetwork_library import HypernetworkLibrary
from nanoldm.finetune.lora_library import LoraLibrary
from nanoldm.finetune.textual_inversion import load_textual_inversion, used_embedding_hashes
from nanoldm.model import LatentDiffusion
from nanoldm.options import IMG2IMG_STRENGTH, INPAINT_STRENGTH, GenerateOptions, batch_run
from nanoldm.pipelines.from_infotext import InfotextWarning, infotext_of, read_infotext
from nanoldm.pipelines.hires import hires_txt2img, validate_hires
from nanoldm.pipelines.conventions import PIXEL_ROUNDING, discard_params, eta_params, infotext_names
from nanoldm.pipelines.images import fill_masked, fit_image, mask_to_tensor, pil_to_tensor, tensor_to_pil
from nanoldm.pipelines.img2img import img2img
from nanoldm.pipelines.infotext import format_infotext, generation_params, hires_params, model_hash, seed_params
from nanoldm.pipelines.inpaint import inpaint
from nanoldm.pipelines.inpaint_area import masked_crop, paste_back
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.txt2img import txt2img
from nanoldm.rng import batch_seeds, resolve_seed


class Pipeline:
    """A loaded model on a device, in a dtype. Each call builds :class:`ModelParts` from the model as it is then
    (textual inversion and hypernetworks change it in place) and hands them to the pipeline functions."""

    def __init__(self, model: LatentDiffusion, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, model_path: str | Path | None = None,
                 hypernetwork_dir: str | Path | None = None, lora_dir: str | Path | None = None):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.hypernetworks = HypernetworkLibrary(model.unet, folder=hypernetwork_dir)  # also <hypernet:name:w> tags
        self.loras = LoraLibrary(model.modules(), model.config, folder=lora_dir)  # also <lora:name:w> tags
        self.device, self.dtype = torch.device(device), dtype
        self.schedule = NoiseSchedule.from_config(model.config.schedule)
        self.model_path = Path(model_path) if model_path else None
        self._hash: str | None = None

    unet = property(lambda self: self.model.unet)
    vae = property(lambda self: self.model.vae)
    text_encoder = property(lambda self: self.model.text_encoder)
    tokenizer = property(lambda self: self.model.tokenizer)
    latent_factor = property(lambda self: self.model.config.vae.downsample_factor)

    def parts(self) -> ModelParts:
        """What the pipeline functions get: the networks and facts of the model as it is now."""
        return ModelParts.from_model(self.model, self.schedule, device=self.device, dtype=self.dtype)

    def txt2img(self, prompt: str, negative_prompt: str = "", *, progress: bool = True, **options) -> list[Image.Image]:
        """``options``: any :class:`GenerateOptions` field (sampler, steps, cfg_scale, seed, width, ...)."""
        opts = GenerateOptions(prompt=prompt, negative_prompt=negative_prompt, **options)
        return self.generate(opts, progress=progress)

    def txt2img_from_infotext(self, source: str | Path | Image.Image, *, progress: bool = True,
                              **overrides) -> list[Image.Image]:
        """Make an image again from its A1111 infotext: ``source`` is the text, a PNG path or a PIL image
        carrying ``parameters``; ``overrides``: GenerateOptions fields that win over the infotext's. What the
        infotext holds that cannot be honoured (another model's hash, unknown keys) is an ``InfotextWarning``."""
        settings = read_infotext(infotext_of(source))
        for line in settings.warnings(self._model_hash()):
            warnings.warn(line, InfotextWarning, stacklevel=2)
        return self.generate(dataclasses.replace(settings.options, **overrides), progress=progress)

    def img2img(self, image: Image.Image, prompt: str, negative_prompt: str = "", *, strength: float = IMG2IMG_STRENGTH,
                progress: bool = True, **options) -> list[Image.Image]:
        opts = GenerateOptions(prompt=prompt, negative_prompt=negative_prompt, strength=strength, **options)
        return self.generate(opts, image, progress=progress)

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str, negative_prompt: str = "", *,
                strength: float = INPAINT_STRENGTH, overlay: bool = True, progress: bool = True,
                **options) -> list[Image.Image]:
        """``overlay``: paste the original pixels back outside the mask (False: the model's own decoding)."""
        opts = GenerateOptions(prompt=prompt, negative_prompt=negative_prompt, strength=strength, **options)
        return self.generate(opts, image, mask, overlay=overlay, progress=progress)

    def generate(self, opts: GenerateOptions, image: Image.Image | None = None, mask: Image.Image | None = None, *,
                 overlay: bool = True, progress: bool = True,
                 monitor: SamplingMonitor | None = None) -> list[Image.Image]:
        """txt2img without ``image``, img2img with it, inpainting with ``image`` and ``mask`` (white: repaint).
        ``monitor``: watch the steps, or end the run early from another thread (:mod:`nanoldm.pipelines.progress`)."""
        if mask is not None and (image is None or mask.size != image.size):
            size = "none" if image is None else f"{image.size[0]}x{image.size[1]}"
            raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} but the image is {size}: "
                             f"they must be the same size")
        opts = self._resolve(opts, image)
        if mask is not None and opts.inpaint_full_res and (crop := masked_crop(
                image, mask, opts.inpaint_full_res_padding, (opts.width, opts.height))) is not None:
            return self._inpaint_only_masked(opts, image, mask, crop, overlay=overlay, progress=progress,
                                             monitor=monitor)
        if self.model_path == BUILTIN_MODEL and (words := unknown_words(opts.prompt, self.tokenizer.added_tokens)):
            warnings.warn(f"the built-in model never saw the word(s) {', '.join(map(repr, words))}: it knows "
                          f"only the shapes world's captions (e.g. 'a small red circle at the top left')", stacklevel=2)
        size, parts = (opts.width, opts.height), self.parts()
        with extra_networks_applied(opts.prompt, (self.hypernetworks, self.loras)) as (text, fields):
            run = dataclasses.replace(opts, prompt=text)
            if image is None and opts.enable_hr:
                images, seeds = hires_txt2img(parts, run, progress=progress, monitor=monitor)
            elif image is None:
                images, seeds = txt2img(parts, run, progress=progress, monitor=monitor)
            elif mask is None:
                images, seeds = img2img(parts, pil_to_tensor([image], size, opts.resize_mode), run,
                                        progress=progress, monitor=monitor)
            else:
                if opts.inpainting_fill == 0:  # A1111's "fill": the hole starts from its surroundings' colours
                    image = fill_masked(fit_image(image, size, opts.resize_mode),
                                        fit_image(mask, size, opts.resize_mode))
                images, seeds = inpaint(parts, pil_to_tensor([image], size, opts.resize_mode),
                                        mask_to_tensor(mask, size, opts.resize_mode), run, progress=progress,
                                        overlay=overlay, monitor=monitor)
        hires = image is None and opts.enable_hr
        return self._finish(images, seeds, opts, opts.strength if image is not None or hires else None, fields)

    def generate_batches(self, opts: GenerateOptions, n_iter: int, image: Image.Image | None = None,
                         mask: Image.Image | None = None, *, progress: bool = True,
                         monitor: SamplingMonitor | None = None) -> list[Image.Image]:
        """A1111's batch count: ``n_iter`` calls of ``generate``, the seeds continuing (``options.batch_run``; a
        random seed is drawn once). With a ``monitor``, each batch first asks ``monitor.begin_run()`` (False:
        the job was interrupted, and the images made so far are returned)."""
        opts = dataclasses.replace(opts, seed=resolve_seed(opts.seed),
                                   subseed=resolve_seed(opts.subseed) if opts.subseed_strength else opts.subseed)
        images: list[Image.Image] = []
        for run in range(n_iter):
            if monitor is not None and not monitor.begin_run():
                break
            images += self.generate(batch_run(opts, run), image, mask, progress=progress, monitor=monitor)
        return images

    def _inpaint_only_masked(self, opts: GenerateOptions, image: Image.Image, mask: Image.Image, crop, *,
                             overlay: bool, progress: bool, monitor) -> list[Image.Image]:
        """A1111's "Only masked": the crop around the mask inpainted at the full size, pasted back at the
        picture's own size (:mod:`~nanoldm.pipelines.inpaint_area`)."""
        box, image_crop, mask_crop = crop
        inner = dataclasses.replace(opts, inpaint_full_res=False, resize_mode="just resize")
        pieces = self.generate(inner, image_crop, mask_crop, overlay=False, progress=progress, monitor=monitor)
        extra = f", Inpaint area: Only masked, Masked area padding: {opts.inpaint_full_res_padding}"
        out = []
        for piece in pieces:
            pasted = paste_back(piece, image, mask, box, overlay=overlay)
            pasted.info.update(piece.info, parameters=piece.info["parameters"] + extra)
            out.append(pasted)
        return out

    def load_hypernetwork(self, path: str | Path, strength: float = 1.0):
        """Apply an A1111 hypernetwork (``.pt``/``.safetensors``) to every generation from now on (after any
        loaded before); ``self.hypernetworks.clear()`` takes them all off. Returns the ``Hypernetwork``."""
        return self.hypernetworks.load(path, strength)

    def load_lora(self, path: str | Path, weight: float = 1.0, *, te_weight: float | None = None):
        """Merge a LoRA (kohya / A1111 or diffusers ``.safetensors``) into the weights for every generation from
        now on (after any loaded before); ``te_weight``: the text encoder's multiplier (default ``weight``).
        Returns the ``ActiveLora``. A file that does not fit is a clear error and changes nothing."""
        return self.loras.load(path, weight, te_weight=te_weight)

    def unload_loras(self) -> None:
        """Take every LoRA off: the weights they changed come back bitwise."""
        self.loras.unload()

    def load_textual_inversion(self, path: str | Path, token: str | None = None) -> str:
        """Add a textual-inversion embedding (A1111 ``.pt``/``.safetensors``, diffusers ``learned_embeds``) under
        ``token`` (default: the name stored in the file); loading a token again replaces it. Returns the token."""
        return load_textual_inversion(self.model, path, token)

    def _resolve(self, opts: GenerateOptions, image: Image.Image | None = None) -> GenerateOptions:
        """Fill in seed, size and guidance scale (the model's own unless given) and check every setting."""
        native = self.model.config.image_size  # an input image is fitted to the size (opts.resize_mode), as in A1111
        opts = dataclasses.replace(opts, seed=resolve_seed(opts.seed),
                                   subseed=resolve_seed(opts.subseed) if opts.subseed_strength else opts.subseed,
                                   width=native if opts.width is None else opts.width,
                                   height=native if opts.height is None else opts.height,
                                   cfg_scale=self.model.config.default_cfg_scale if opts.cfg_scale is None
                                   else opts.cfg_scale)
        opts.validate(self.latent_factor)  # every bad setting fails here, before any work
        if image is not None and opts.enable_hr:
            raise ValueError("Hires. fix is for txt2img: turn it off for img2img and inpainting")
        validate_hires(opts, self.latent_factor)
        size = f"{opts.width}x{opts.height}"
        if max(opts.width, opts.height) > 4 * native and not opts.force_size:
            raise ValueError(f"{size} is over 4x this model's native size {native}x{native}: it would be slow and "
                             f"draw noise; force_size=True (--force-size) runs it anyway")
        if max(opts.width, opts.height) > 2 * native:
            warnings.warn(f"{size} is over twice this model's native size {native}x{native}: expect repeated or "
                          f"broken pictures", stacklevel=4)
        return opts

    def _finish(self, images: torch.Tensor, seeds: list[int], opts: GenerateOptions,
                strength: float | None, fields: dict[str, str]) -> list[Image.Image]:
        out = tensor_to_pil(images, PIXEL_ROUNDING[opts.like])
        sampler, schedule_type = infotext_names(opts)
        _, subseeds = batch_seeds(opts.seed, len(seeds), opts.subseed, opts.subseed_strength)
        extra = {**eta_params(opts), **fields, **used_embedding_hashes(self.model, opts.prompt, opts.negative_prompt),
                 **discard_params(opts), **hires_params(opts),
                 **({"Conventions": opts.like} if opts.like != "a1111" else {})}  # the same for every image
        for i, (im, seed) in enumerate(zip(out, seeds)):
            params = generation_params(
                steps=opts.steps, sampler=sampler, schedule_type=schedule_type, cfg_scale=opts.cfg_scale, seed=seed,
                width=opts.width, height=opts.height, model_hash=self._model_hash(),
                model=self.model_path.stem if self.model_path else None, denoising_strength=strength,
                clip_skip=opts.clip_skip, seed_extras=seed_params(opts, subseeds[i] if subseeds else None),
                extra=extra)
            im.info["parameters"] = format_infotext(opts.prompt, opts.negative_prompt, params)
            im.info["seed"] = seed
        return out

    def _model_hash(self) -> str | None:
        """A1111's short hash of the checkpoint file (computed once; folders have none)."""
        if self._hash is None and self.model_path is not None and self.model_path.is_file():
            self._hash = model_hash(self.model_path)
        return self._hash


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ``torch.bfloat16`` -> torch.bfloat16; likewise float32 and float16."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, if this machine has it: a ValueError naming what is missing otherwise."""
    try:
        device = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {str(device)!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but this PyTorch sees no CUDA GPU (a CPU-only build or no "
                         f"GPU): use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} asked for, but this PyTorch has no MPS (Apple GPU) support here")
    return device


def load_pipeline(path: str | Path | None = None, *, device: str | torch.device | None = None,
                  dtype: str | torch.dtype = torch.float32) -> Pipeline:
    """A pipeline for our checkpoint, an SD 1.x single file or a diffusers folder; None: the built-in
    shapes-world model (:mod:`nanoldm.builtin`). ``dtype``: the networks' precision ("float32"; "float16" on a
    GPU; "bfloat16" on a GPU or a CPU with bf16 units, where it is the faster choice)."""
    dtype = parse_dtype(dtype)
    if path is None:
        path = builtin_model_path()
    device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Pipeline(load_model(path, dtype=dtype), device=device, dtype=dtype, model_path=path)

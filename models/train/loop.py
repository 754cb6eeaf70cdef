"""One LoRA training run, on one process or several (`accelerate launch`).

Data parallel through accelerate: every process loads the model with the predictors'
`load_components()`, takes its slice of each global batch (models/train/data.py), and
accelerate averages the gradients, so N processes with batch_size b train like one
process with batch_size N x b. Only the main process logs, checkpoints and writes.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.engine import loading
from models.errors import InputError
from models.log import log
from models.settings import Settings
from models.specs import ModelSpec
from models.train import checkpoint, data, interrupt, outputs
from models.train.captions import autocaption
from models.train.config import TrainConfig
from models.train.objectives import OBJECTIVES

# The step number of the fixed batch: its draws never coincide with a training step's.
FIXED = 2**40


@dataclass
class Result:
    out_dir: Path
    lora: Path | None = None
    steps_done: int = 0
    # Mean loss of one fixed batch (fixed noise and timesteps) before and after training.
    fixed_loss_before: float | None = None
    fixed_loss_after: float | None = None
    steps_per_second: float | None = None
    peak_memory_gb: float | None = None
    samples: list[Path] = field(default_factory=list)


def _accelerator(spec: ModelSpec, settings: Settings):
    from accelerate import Accelerator, PartialState

    cpu = settings.device == "cpu" or not torch.cuda.is_available()
    device = str(PartialState(cpu=cpu).device)
    dtype = loading.pick_dtype(spec.dtype, "cpu" if cpu else device)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    return Accelerator(cpu=cpu, mixed_precision=precision), dtype


def _optimizer(config: TrainConfig, params: list, device: torch.device):
    kwargs = dict(lr=config.learning_rate, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if device.type != "cuda":
        raise InputError("optimizer=adamw8bit runs on CUDA GPUs only: use optimizer=adamw.")
    try:
        import bitsandbytes  # 125 MB of CUDA kernels: imported only when asked for
    except ImportError:
        raise InputError(
            "optimizer=adamw8bit needs the bitsandbytes package (pinned in requirements.txt): "
            "run script/setup, or use optimizer=adamw."
        ) from None
    return bitsandbytes.optim.AdamW8bit(params, **kwargs)


class Trainer:
    def __init__(self, spec: ModelSpec, settings: Settings, config: TrainConfig, out_dir: Path):
        from models.serving.families import FAMILIES

        self.spec, self.config, self.out_dir = spec, config, Path(out_dir)
        self.accelerator, self.dtype = _accelerator(spec, settings)
        self.main = self.accelerator.is_main_process
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if not self.main:
            log.setLevel("WARNING")
        self.settings = settings
        self.device = self.accelerator.device
        components = FAMILIES[spec.interface].load_components(
            spec, settings, str(self.device), training=True
        )
        self.pipe = getattr(components, "base", components)  # SDXL: no refiner in training
        self.pipe.set_progress_bar_config(disable=True)
        self.objective = OBJECTIVES.get(spec.interface, OBJECTIVES[spec.family])(
            self.pipe, spec, config
        )
        self.pairs = spec.interface == "flux-kontext"  # trains on before/after pairs

    # --- data -------------------------------------------------------------------
    def load_data(self, archive: Path) -> None:
        # Each process unpacks its own copy: no process waits on another's files (a bad
        # archive fails everywhere at once instead of hanging the others).
        folder = self.out_dir / "work" / f"images-{self.rank}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        names = data.extract(Path(archive), folder)
        self.images = data.load_images(folder, names, pairs=self.pairs)
        missing = [i for i, item in enumerate(self.images) if item.caption is None]
        generated = {}
        if missing and self.config.autocaption and self.pairs:
            log.info("autocaption: a pair's caption is its edit instruction, not a description")
        elif missing and self.config.autocaption:
            generated = autocaption(
                [self.images[i] for i in missing], self.spec, self.settings, str(self.device)
            )
        self.captions = {}
        for item in self.images:
            text = item.caption or generated.get(item.name)
            self.captions[item.name] = data.with_trigger(text, self.config.trigger_word)
            log.info(f"Caption of {item.name}: {self.captions[item.name]!r}")
        alone = [i.name for i in self.images if not (i.caption or generated.get(i.name))]
        if alone:
            given = "the trigger word alone" if self.config.trigger_word else "an empty one"
            log.info(f"{len(alone)} images have no caption and get {given}: " + ", ".join(alone))
        self.samples = data.make_samples(self.images, self.config.resolutions)
        self.sample_index = {sample: i for i, sample in enumerate(self.samples)}
        global_batch = self.config.batch_size * self.world
        self.schedule = data.Schedule(self.samples, global_batch, self.config.seed)
        log.info(
            f"{len(self.images)} images, {len(self.samples)} samples in "
            f"{len(self.schedule.buckets)} buckets; global batch {global_batch} "
            f"({self.world} processes x batch_size {self.config.batch_size})"
        )

    def _cache(self) -> None:
        """Text conditioning for every caption (and the empty one), and with
        cache_latents every sample's VAE posterior; then the encoders can leave the GPU."""
        texts = {*self.captions.values(), ""}
        self.text = {t: self.objective.encode_text(t) for t in sorted(texts)}
        self.moments, self.start_moments = {}, {}
        if self.config.cache_latents:
            with torch.no_grad():
                for index, sample in enumerate(self.samples):
                    prepared = self._pixels(sample)
                    self.moments[index] = self.objective.encode_image(prepared["pixels"][None])
                    self.moments[index] = self.moments[index].cpu()
                    if "start_pixels" in prepared:
                        start = self.objective.encode_image(prepared["start_pixels"][None])
                        self.start_moments[index] = start.cpu()
        if self.device.type == "cuda":
            self._offload(True)

    def _offload(self, away: bool) -> None:
        keep = ("vae",) if not self.config.cache_latents else ()
        for name in ("text_encoder", "text_encoder_2", "vae"):
            module = getattr(self.pipe, name, None)
            if module is not None and name not in keep:
                module.to("cpu" if away else self.device)

    def _pixels(self, sample: data.Sample) -> dict:
        return data.prepare(self.images[sample.image], sample)

    def _batch(self, step: int, samples: list[data.Sample], positions: range) -> tuple:
        """(latents, text conditioning, extras, generators) of these samples."""
        generators = [data.sample_generator(self.config.seed, step, p) for p in positions]
        texts = []
        for sample, generator in zip(samples, generators, strict=True):
            caption = self.captions[self.images[sample.image].name]
            dropped = torch.rand(1, generator=generator).item() < self.config.caption_dropout_rate
            texts.append(self.text["" if dropped else caption])
        text = {k: torch.cat([t[k] for t in texts]) for k in texts[0]}
        prepared = [self._pixels(s) for s in samples]
        if self.config.cache_latents:
            moments = torch.cat([self.moments[self.sample_index[s]] for s in samples])
        else:
            with torch.no_grad():
                moments = self.objective.encode_image(torch.stack([p["pixels"] for p in prepared]))
        latents = self.objective.latents(moments.cpu(), generators).to(self.device)
        start = None
        if self.pairs:
            if self.config.cache_latents:
                start = torch.cat([self.start_moments[self.sample_index[s]] for s in samples])
            else:
                with torch.no_grad():
                    pictures = torch.stack([p["start_pixels"] for p in prepared])
                    start = self.objective.encode_image(pictures)
            start = self.objective.start_latents(start.cpu()).to(self.device)
        masks = [p["mask"] for p in prepared]
        mask = None
        if any(m is not None for m in masks):
            ones = torch.ones_like(prepared[0]["pixels"][:1])
            mask = torch.stack([ones if m is None else m for m in masks]).to(self.device)
        extra = {
            "start_latents": start,
            "mask": mask,
            "size": (samples[0].height, samples[0].width),
            "original_size": [p["original_size"] for p in prepared],
            "crop_top_left": [p["crop_top_left"] for p in prepared],
        }
        return latents, text, extra, generators

    def _local(self, step: int, batch: list[data.Sample]) -> tuple[list, range]:
        size = self.config.batch_size
        positions = range(self.rank * size, (self.rank + 1) * size)
        return [batch[p] for p in positions], positions

    def _loss(self, model, step: int, batch: list[data.Sample]) -> torch.Tensor:
        samples, positions = self._local(step, batch)
        latents, text, extra, generators = self._batch(step, samples, positions)
        with self.accelerator.autocast():
            return self.objective.loss(model, latents, text, extra, generators).mean()

    @torch.no_grad()
    def fixed_loss(self, model, draws: int = 4) -> float:
        """The loss of the first global batch, averaged over a few fixed noise and timestep
        draws that no training step uses (and over the processes' slices of the batch)."""
        batch = self.schedule.batch(0)
        losses = [self._loss(model, FIXED + k, batch) for k in range(draws)]
        return float(self.accelerator.reduce(torch.stack(losses).mean(), "mean"))

    # --- training ---------------------------------------------------------------
    def _add_lora(self):
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        model = self.objective.model
        for name in ("transformer", "unet", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                module.requires_grad_(False)
        if getattr(self.pipe.vae.config, "force_upcast", False):
            self.pipe.vae.to(torch.float32)  # SDXL's VAE overflows in float16 encoding
        targets = self.objective.targets
        torch.manual_seed(self.config.seed)  # the same initial LoRA in every process
        model.add_adapter(
            LoraConfig(
                r=self.config.lora_rank,
                lora_alpha=self.config.lora_rank,
                init_lora_weights="gaussian",
                target_modules=targets if isinstance(targets, str) else list(targets),
            )
        )
        cast_training_params(model, dtype=torch.float32)
        if self.config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    def _state(self) -> dict:
        return {
            "config": self.config.to_json(),
            "global_batch": self.config.batch_size * self.world,
        }

    def _step(self, wrapped, params, optimizer, step: int) -> float:
        """One optimizer step; returns its loss averaged over the processes."""
        loss = self._loss(wrapped, step, self.schedule.batch(step))
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(self.accelerator.reduce(loss.detach(), "mean"))

    def _stop_asked(self, pressed: bool) -> bool:
        """Whether any process saw Ctrl-C: all of them then stop before the same step."""
        if self.world == 1:
            return pressed
        flag = torch.tensor([float(pressed)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, "sum").item())

    def run(self, resume: Path | None = None) -> Result:
        from peft.utils import get_peft_model_state_dict

        result = Result(self.out_dir)
        self._cache()
        model = self._add_lora()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _optimizer(self.config, params, self.device)
        wrapped, optimizer = self.accelerator.prepare(model, optimizer)
        global_batch = self.config.batch_size * self.world
        start = (
            checkpoint.restore(resume, model, optimizer, self.config, global_batch) if resume else 0
        )
        result.fixed_loss_before = self.fixed_loss(wrapped)
        log.info(f"Loss on a fixed batch before training: {result.fixed_loss_before:.5f}")
        wrapped.train()
        steps, every = self.config.steps, self.config.checkpoint_every
        last_saved, started, warm, losses = start, time.perf_counter(), 0.0, []
        step = start
        try:
            with interrupt.deferred() as pressed:
                for step in range(start, steps):
                    if self._stop_asked(pressed()):
                        raise KeyboardInterrupt
                    losses.append(self._step(wrapped, params, optimizer, step))
                    done = step + 1
                    if done == start + 1:
                        warm = time.perf_counter()  # speed is measured after the first step
                    self._progress(done, start, started, losses)
                    if every and done % every == 0 and done < steps and self.main:
                        lora = get_peft_model_state_dict(model)
                        state = optimizer.state_dict()
                        checkpoint.save(self.out_dir, done, lora, state, self._state())
                        last_saved = done
        except KeyboardInterrupt:
            where = checkpoint.find(self.out_dir) if last_saved > 0 else None
            log.info(
                f"Interrupted at step {step}. "
                + (
                    f"The last checkpoint is {where}: continue with --resume {self.out_dir}"
                    if where
                    else "No checkpoint was saved yet."
                )
            )
            raise
        result.steps_done = steps - start
        if result.steps_done > 1:
            result.steps_per_second = (result.steps_done - 1) / (time.perf_counter() - warm)
        result.peak_memory_gb = _peak_memory_gb(self.device)
        wrapped.eval()
        result.fixed_loss_after = self.fixed_loss(wrapped)
        log.info(
            f"Loss on the fixed batch: {result.fixed_loss_before:.5f} before, "
            f"{result.fixed_loss_after:.5f} after training"
        )
        self.accelerator.wait_for_everyone()
        if self.main:
            self._finish(model, result)
        self.accelerator.wait_for_everyone()
        return result

    def _progress(self, done: int, start: int, started: float, losses: list) -> None:
        total = self.config.steps
        if not (done == total or done == start + 1 or done % max(1, total // 100) == 0):
            return
        rate = (done - start) / max(time.perf_counter() - started, 1e-9)
        recent = losses[-10:]
        eta = (total - done) / rate if rate else 0.0
        log.info(
            f"step {done}/{total} loss {losses[-1]:.4f} (mean of last {len(recent)}: "
            f"{sum(recent) / len(recent):.4f}) {rate:.2f} steps/s, eta {eta:.0f}s"
        )

    def _finish(self, model, result: Result) -> None:
        config = self.config
        metadata = {
            "trigger_word": config.trigger_word,
            "base_model": self.spec.name,
            "training_config": json.dumps(config.to_json(), sort_keys=True),
        }
        component = self.objective.trained
        result.lora = outputs.save_lora(
            self.out_dir, self.pipe, component, model, self.dtype, metadata
        )
        outputs.save_kohya(self.out_dir, self.spec.family, scale=1.0)  # lora_alpha == rank
        outputs.save_captions(self.out_dir, self.captions)
        prompts = self._sample_prompts()
        if prompts and self.device.type == "cuda":
            self._offload(False)
        starts = None
        if self.pairs:  # each prompt edits the start picture it was trained with
            first = {self.captions[i.name]: i.start for i in reversed(self.images)}
            starts = [first[prompt] for prompt in prompts]
        result.samples = outputs.save_samples(
            self.out_dir, self.pipe, self.spec, config, prompts, self.dtype, starts
        )
        outputs.save_config(
            self.out_dir,
            {
                **config.to_json(),
                "processes": self.world,
                "images": [i.name for i in self.images],
                "sample_prompts": self._sample_prompts(),
                "fixed_batch_loss": [result.fixed_loss_before, result.fixed_loss_after],
            },
        )

    def _sample_prompts(self) -> list[str]:
        distinct = list(dict.fromkeys(self.captions.values()))
        return distinct[: self.config.samples]


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def train(
    spec: ModelSpec,
    settings: Settings,
    config: TrainConfig,
    input_images: Path,
    out_dir: Path,
    *,
    tar_path: Path | None = None,
    resume: Path | None = None,
) -> Result:
    """Train a LoRA into `out_dir` (checkpoints, outputs) and pack the tar."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(spec, settings, config, out_dir)
    trainer.load_data(Path(input_images))
    result = trainer.run(resume)
    if trainer.main:
        shutil.rmtree(out_dir / "work", ignore_errors=True)
        if tar_path is not None:
            outputs.pack(out_dir, Path(tar_path))
    return result

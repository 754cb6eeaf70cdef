"""LoRA fine-tuning, three ways, one implementation (models/train/):

- Cog: `train()` below (`cog train`, or POST /trainings to `script/serve --train`);
- command line: `python train.py --model flux-dev --input-images data.zip --trigger-word
  ZIKI --output lora.tar`;
- several GPUs: `accelerate launch --num_processes N train.py ...` (data parallel).

Inputs stay literal here (cog build reads this file statically); tests check they match
models/train/config.py.
"""

import argparse
import logging
import sys
import tempfile
from dataclasses import fields
from pathlib import Path as PlainPath
from typing import Optional

from cog import BaseModel, Input, Path

from models.log import to_stdout
from models.settings import load_settings
from models.specs import SPECS, get_spec
from models.train.config import TrainInputs, plan
from models.train.loop import train as run_training


class TrainingOutput(BaseModel):
    weights: Path


def train(
    input_images: Path = Input(
        description=(
            "A .zip or .tar of training images: jpg, png, webp, gif, bmp or tiff, 10-30 of "
            "them is typical. A caption may sit beside each image as a .txt of the same name "
            "(photo1.png + photo1.txt). __MACOSX folders, hidden files and other files are "
            "skipped (logged). Transparent pixels are left out of the loss. For "
            "flux-kontext-dev, pairs: photo1.png (after the edit), photo1_start.png (before) "
            "and photo1.txt (the instruction)."
        )
    ),
    trigger_word: str = Input(
        description=(
            "A rare word the LoRA learns to associate with your images, e.g. TOK. It is put "
            "in front of every caption that lacks it; use it in prompts later. Empty: "
            "captions are trained as written (e.g. regularisation images without the word)."
        ),
        default="TOK",
    ),
    autocaption: bool = Input(
        description=(
            "Caption images that have no .txt with an image captioner (BLIP). Without one, "
            "or when it cannot be loaded, such images train on the trigger word alone."
        ),
        default=True,
    ),
    steps: int = Input(
        description="Training steps, 1-100000. 1000 suits 10-30 images.",
        ge=1,
        le=100000,
        default=1000,
    ),
    learning_rate: Optional[float] = Input(
        description=(
            "Learning rate, 1e-7 to 0.1. Empty: the model's default (FLUX 4e-4, SDXL 1e-4). "
            "Lower it if samples look burnt."
        ),
        ge=1e-7,
        le=0.1,
        default=None,
    ),
    lora_rank: int = Input(
        description="LoRA rank, 1-256: higher learns finer detail and makes a larger file.",
        ge=1,
        le=256,
        default=16,
    ),
    batch_size: int = Input(
        description="Images per step, 1-64. Larger batches need more GPU memory.",
        ge=1,
        le=64,
        default=1,
    ),
    resolution: str = Input(
        description=(
            "Training sizes in pixels, comma-separated multiples of 64, e.g. '512,768,1024'. "
            "Each image trains at every size that fits inside it, in the nearest aspect-ratio "
            "bucket; images are never upscaled."
        ),
        default="512,768,1024",
    ),
    caption_dropout_rate: float = Input(
        description=(
            "Share of steps, 0-1, that see an empty caption, so the LoRA also works without "
            "the trigger word's full caption."
        ),
        ge=0,
        le=1,
        default=0.05,
    ),
    optimizer: str = Input(
        description="adamw, or adamw8bit (bitsandbytes' 8-bit AdamW: less memory, GPU only).",
        choices=["adamw", "adamw8bit"],
        default="adamw",
    ),
    gradient_checkpointing: bool = Input(
        description="Recompute activations in the backward pass: less GPU memory, ~30% slower.",
        default=False,
    ),
    cache_latents: bool = Input(
        description="Encode every image with the VAE once before training (faster).",
        default=True,
    ),
    seed: Optional[int] = Input(
        description="Random seed, 0-4294967295. Empty: random, logged as 'Using seed: N'.",
        ge=0,
        le=4294967295,
        default=None,
    ),
) -> TrainingOutput:
    to_stdout()
    settings = load_settings()
    spec = get_spec(settings.model or "flux-dev")
    values = {k: v for k, v in locals().items() if k not in ("settings", "spec")}
    config = plan(spec, TrainInputs(**values))
    out_dir = PlainPath(tempfile.mkdtemp(prefix="training-"))
    tar = out_dir / "trained_model.tar"
    run_training(spec, settings, config, PlainPath(input_images), out_dir, tar_path=tar)
    return TrainingOutput(weights=Path(tar))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a LoRA that the predictors load (lora_weights)."
    )
    parser.add_argument("--model", choices=sorted(SPECS), required=True)
    for f in fields(TrainInputs):
        flag, kind = "--" + f.name.replace("_", "-"), f.type
        if "bool" in str(kind):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"])  # fmt: skip
            continue
        convert = {"int": int, "float": float, "Path": PlainPath}
        cast = next((c for name, c in convert.items() if name in str(kind)), str)
        required = f.name == "input_images"
        parser.add_argument(flag, type=cast, required=required, help=f.metadata["help"],
                            **({} if required else {"default": f.default}))  # fmt: skip
    parser.add_argument("--output", type=PlainPath, default=PlainPath("lora.tar"),
                        help="The tar to write (default: lora.tar).")  # fmt: skip
    parser.add_argument("--output-dir", type=PlainPath,
                        help="Checkpoints and unpacked outputs (default: the tar's name + "
                        "'-training'). Nothing is written elsewhere.")  # fmt: skip
    resume = "An earlier --output-dir (its newest checkpoint), or a checkpoint folder."
    parser.add_argument("--resume", type=PlainPath, help=resume)
    return parser


def main(argv=None) -> int:
    from models.errors import InputError, WeightsError

    args = _parser().parse_args(argv)
    to_stdout()
    settings = load_settings()
    spec = get_spec(args.model)
    values = {f.name: getattr(args, f.name) for f in fields(TrainInputs)}
    out_dir = args.output_dir or args.output.with_name(args.output.stem + "-training")
    try:
        if args.resume is not None and values["seed"] is None:
            values["seed"] = _checkpoint_seed(args.resume)
        config = plan(spec, TrainInputs(**values))
        run_training(spec, settings, config, args.input_images, out_dir,
                     tar_path=args.output, resume=args.resume)  # fmt: skip
    except (InputError, WeightsError) as err:
        logging.getLogger("models").error(f"Error: {err}")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _checkpoint_seed(path) -> int:
    """A resumed run keeps its checkpoint's seed unless --seed says otherwise (then a
    mismatch is refused)."""
    from models.train import checkpoint

    found = checkpoint.find(path)
    return checkpoint.load(found)[2]["config"]["seed"]


if __name__ == "__main__":
    sys.exit(main())

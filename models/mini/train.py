"""script/train-mini: trains the mini models from scratch on the mini world and writes
them, in diffusers layout and half precision, to mini/<name>/ (committed; the
mini-* variants are built from there). Repeatable bit for bit for a seed on the same
machine: each family's recipe (RECIPES) fixes its steps and CPU threads, which the
floating-point results depend on.

    script/train-mini                 # every family (kontext after flux), into mini/
    script/train-mini --family sdxl --out /tmp/mini
    script/train-mini --family flux --steps 200 --vae-steps 100 --out /tmp/mini  # a trial
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from models.weights.builds import MINI_DIR

# Each family's recipe: its folder under mini/, the steps of its VAE and of its
# transformer/UNet, and the CPU threads of each stage. The committed weights are what
# these wrote (mini/<folder>/training.json).
RECIPES = {
    "flux": {"folder": "flux-schnell", "vae_steps": 1500, "steps": 9000,
             "vae_threads": 1, "threads": 1},
    "sdxl": {"folder": "sdxl", "vae_steps": 1500, "steps": 6000,
             "vae_threads": 1, "threads": 1},
    # Fine-tunes the mini FLUX (its folder in --out when there, else the committed one)
    # on edit pairs: no VAE of its own. models/mini/kontext.py says what the rest are.
    "kontext": {"folder": "flux-kontext", "base": "flux-schnell", "steps": 9000,
                "threads": 1, "lr": 1e-3, "edit_weight": 4.0},
}  # fmt: skip


def train_family(family: str, out: Path, *, seed: int, recipe: dict, log=print) -> Path:
    """Train the family's VAE, then its transformer/UNet on that VAE as it is shipped (in
    half precision), and write the pipeline (frozen text encoders included) in half
    precision with the recipe it was made with."""
    from models.mini import flux as mini_flux
    from models.mini import sdxl as mini_sdxl
    from models.mini import vae as mini_vae

    if family == "kontext":
        return _train_kontext(out, seed=seed, recipe=recipe, log=log)
    trainer = {"flux": mini_flux, "sdxl": mini_sdxl}[family]
    pipe = trainer.build(seed)
    torch.set_num_threads(recipe["vae_threads"])
    mini_vae.train(pipe.vae, steps=recipe["vae_steps"], seed=seed, log=log)
    mini_vae.set_latent_scale(pipe.vae, seed=seed, flux=family == "flux")
    mini_vae.report(pipe.vae, log=log)
    pipe.vae.half().float()
    torch.set_num_threads(recipe["threads"])
    trainer.train(pipe, steps=recipe["steps"], seed=seed + 1, log=log)
    mini_vae.sharpen_posterior(pipe.vae)
    return _save(pipe, out, seed, recipe)


def _train_kontext(out: Path, *, seed: int, recipe: dict, log) -> Path:
    from models.mini import kontext as mini_kontext

    base = out / recipe["base"]
    if not (base / "model_index.json").is_file():
        base = MINI_DIR / recipe["base"]
    pipe = mini_kontext.build(base)
    torch.set_num_threads(recipe["threads"])
    mini_kontext.train(pipe, steps=recipe["steps"], seed=seed + 2, lr=recipe["lr"],
                       edit_weight=recipe["edit_weight"], log=log)  # fmt: skip
    return _save(pipe, out, seed, recipe)


def _save(pipe, out: Path, seed: int, recipe: dict) -> Path:
    dest = out / recipe["folder"]
    pipe.to(torch.float16).save_pretrained(dest)
    settings = {"seed": seed, **{k: v for k, v in recipe.items() if k != "folder"}}
    (dest / "training.json").write_text(json.dumps(settings, indent=2) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=[*RECIPES, "all"], default="all")
    parser.add_argument("--out", type=Path, default=MINI_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="transformer/UNet steps (default: recipe)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: recipe)")
    parser.add_argument("--threads", type=int, help="CPU threads of every stage (default: recipe)")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    families = list(RECIPES) if args.family == "all" else [args.family]
    for family in families:
        started = time.perf_counter()
        recipe = dict(RECIPES[family])
        for key, value in (("vae_steps", args.vae_steps), ("steps", args.steps)):
            if key in recipe:
                recipe[key] = value or recipe[key]
        if args.threads:
            recipe.update(threads=args.threads, **({"vae_threads": args.threads}
                                                   if "vae_threads" in recipe else {}))  # fmt: skip
        log = lambda line: print(line, flush=True)  # noqa: E731
        dest = train_family(family, args.out, seed=args.seed, recipe=recipe, log=log)
        minutes = (time.perf_counter() - started) / 60
        print(f"Trained mini {family} into {dest} in {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

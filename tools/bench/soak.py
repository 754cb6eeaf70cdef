"""`script/bench --soak N`: N varied requests through one server, to see whether memory
or disk grows (figures printed, never asserted as timings).

Requests mix modes (txt2img, img2img, inpainting), sizes, batch sizes, output formats,
seeds, LoRAs (random tiny ones, one or two at a time), and failures: inputs that fail in
the worker and inputs the schema refuses (422), in a random order (seeded: a run
repeats), so the heaviest combinations turn up whenever they happen to. RSS of coglet
(the server) and of its worker are sampled every `every` requests (the curve); the disk
used by the worker's temporary files (inputs, outputs) is measured at the start and the
end.
"""

from __future__ import annotations

import base64
import io
import random
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

from PIL import Image

from models.serving.families import FAMILIES
from models.settings import load_settings
from models.specs import get_spec
from models.weights.resolver import resolve
from tools.bench.inputs import size_inputs
from tools.fixtures.loras import lora_for
from tools.server import model_ref, predict, started

FORMATS = ("webp", "jpg", "png")
# coglet 0.23.1 makes predictions/<id>/{inputs,outputs} here for every prediction and
# leaves them, empty (the path is fixed; other servers on the machine add theirs).
COGLET_DIRS = Path("/tmp/coglet/predictions")
RATIOS = ("1:1", "16:9", "2:3", "4:5")


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pictures() -> tuple[str, str]:
    photo = Image.radial_gradient("L").resize((384, 320)).convert("RGB")
    mask = Image.new("L", (384, 320), 0)
    mask.paste(255, (192, 0, 384, 320))
    return _png_uri(photo), _png_uri(mask)


def make_loras(model: str, folder: Path) -> list[str]:
    """Two random LoRAs for `model`'s family, as local files (a path is a valid source)."""
    spec = get_spec(model)
    settings = replace(load_settings(), device="cpu", safety_checker=False)
    components = FAMILIES[spec.interface].load_components(spec, settings, "cpu", training=True)
    pipe = getattr(components, "base", components)  # SDXL's are a bundle
    build = lora_for(spec.family)
    return [str(build(pipe, folder / f"soak-{i}.safetensors", seed=i)) for i in range(2)]


def request(
    family: str, i: int, loras: list[str], photo: str, mask: str, *, heavy: bool = False
) -> dict:
    """The i-th request of a soak, drawn at random (seeded by i, so a run repeats): 1-4
    outputs, a format, an aspect ratio; one request in five img2img and one in ten
    inpainting; LoRAs (one in six one, one in twelve two); one in ten fails in the worker
    (a mask without image) and one in thirteen is refused by the schema (422). `heavy`:
    the heaviest of its mode instead (4 outputs, two LoRAs)."""
    rng = random.Random(i)
    inputs: dict = {
        "prompt": f"soak request {i}",
        "seed": i,
        "num_outputs": 4 if heavy else rng.randint(1, 4),
        "output_format": rng.choice(FORMATS),
        "num_inference_steps": 2,
    }
    inputs |= size_inputs(family, rng.choice(RATIOS), "0.25")
    # heavy: txt2img, img2img, inpainting for i = 0, 1, 2.
    mode = (0.5, 0.1, 0.25)[i % 3] if heavy else rng.random()
    if mode < 0.2:
        inputs |= {"image": photo, "prompt_strength": 0.7}
    elif mode < 0.3:
        inputs |= {"image": photo, "mask": mask, "prompt_strength": 0.9}
    chance = rng.random()
    if heavy or chance < 1 / 12:
        inputs |= {"lora_weights": loras[1], "extra_lora": loras[0], "extra_lora_scale": 0.8}
    elif chance < 1 / 12 + 1 / 6:
        inputs |= {"lora_weights": loras[0], "lora_scale": rng.choice((0.5, 1.0, 1.5))}
    if not heavy and rng.random() < 0.1:
        inputs = {k: v for k, v in inputs.items() if k != "image"} | {"mask": mask}  # fails
    if not heavy and rng.random() < 1 / 13:
        inputs["num_outputs"] = 9  # refused by the schema: 422
    return inputs


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def disk_mib(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return round(total / 2**20, 2)


def soak(model: str, n: int, *, every: int = 10, heaviest_first: bool = False) -> dict:
    """`heaviest_first`: the first three requests are the heaviest of each mode, so the
    memory measured after them has seen every peak (how the soak hid growth before)."""
    spec = get_spec(model)
    for entry in spec.weight_entries(safety=load_settings().safety_checker):
        resolve(entry)
    photo, mask = _pictures()
    warm_up = n // 4  # growth is measured from here to the end
    curve: list[tuple[int, float, float]] = []
    statuses: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        loras = make_loras(model, Path(scratch))
        ref, env = model_ref(model)
        with started(ref, env=env) as server:
            (worker,) = _children(server.proc.pid)
            disk_start = disk_mib(server.tmp_dir)
            coglet_before = _entries(COGLET_DIRS)
            for i in range(n):
                heavy = heaviest_first and i < 3
                inputs = request(spec.interface, i, loras, photo, mask, heavy=heavy)
                status, body = predict(server.url, inputs)
                statuses[body.get("status", str(status))] += 1
                if (i + 1) % every == 0 or i + 1 in (warm_up, n):
                    curve.append((i + 1, rss_mib(worker), rss_mib(server.proc.pid)))
                    print(f"soak {i + 1}/{n}: {curve[-1][1:]} MiB", file=sys.stderr)
            disk_end = disk_mib(server.tmp_dir)
            coglet_added = len(_entries(COGLET_DIRS) - coglet_before)
    start = next(point for point in curve if point[0] >= warm_up)
    middle = min(curve, key=lambda point: abs(point[0] - (warm_up + n) / 2))
    end = curve[-1]

    def growth(column: int) -> float:
        return round(100 * (end[column] - start[column]) / start[column], 2)

    return {
        "model": model,
        "requests": n,
        "statuses": dict(statuses),
        "rss_mib": {
            who: {"start": start[col], "middle": middle[col], "end": end[col]}
            for who, col in (("worker", 1), ("server", 2))
        },
        "after_request": {"start": start[0], "middle": middle[0], "end": end[0]},
        "worker_growth_pct": growth(1),
        "server_growth_pct": growth(2),
        "worker_tmp_disk_mib": {"start": disk_start, "end": disk_end},
        "coglet_empty_dirs_added": coglet_added,
        "curve": curve,
    }

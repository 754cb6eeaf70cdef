"""Training data: archives, captions, skipped files, buckets, batches, masks (no model)."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.train import data
from models.train.objectives import masked_mean
from tests.train.helpers import archive, dataset, png


def load(path, tmp_path):
    folder = tmp_path / "unpacked"
    folder.mkdir()
    return data.load_images(folder, data.extract(path, folder))


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_every_format_is_trained_and_junk_is_skipped_by_name(tmp_path, suffix, caplog):
    formats = {}
    for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"),
                     ("BMP", "bmp"), ("TIFF", "tiff")]:  # fmt: skip
        image = Image.new("RGB", (64, 64), (10, 20, 30))
        path = tmp_path / f"x.{ext}"
        image.save(path, format=fmt)
        formats[f"img_{ext}.{ext}"] = path.read_bytes()
    members = {**formats, "__MACOSX/._img.png": b"\0", "sub/.hidden.png": b"\0", "a.docx": b"x"}
    with caplog.at_level(logging.INFO, logger="models"):
        images = load(archive(tmp_path / f"data{suffix}", members), tmp_path)
    assert sorted(i.name for i in images) == sorted(formats)
    for name in ("__MACOSX/._img.png", "sub/.hidden.png", "a.docx"):
        assert name in caplog.text


def test_captions_come_from_the_txt_beside_each_image(tmp_path):
    images = {i.name: i for i in load(dataset(tmp_path / "d.zip"), tmp_path)}
    assert images["red.png"].caption == "a red circle"
    assert images["plain/green.jpg"].caption is None
    assert data.with_trigger("a red circle", "ZIKI") == "ZIKI, a red circle"
    assert data.with_trigger("ZIKI a blue circle", "ZIKI") == "ZIKI a blue circle"
    assert data.with_trigger(None, "ZIKI") == "ZIKI"


@pytest.mark.parametrize(
    "members, words",
    [
        ({}, ["empty"]),
        ({"a.pdf": b"%PDF", "b.txt": b"hi"}, ["no images", "a.pdf"]),
        ({"broken.png": b"\x89PNG\r\n\x1a\nnot really"}, ["broken.png"]),
    ],
)
def test_bad_archives_fail_naming_the_files_and_the_fix(tmp_path, members, words):
    path = archive(tmp_path / "d.zip", members) if members else tmp_path / "d.zip"
    if not members:
        path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        load(path, tmp_path)
    assert "input_images" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_corrupt_and_unsupported_archives_say_what_they_are(tmp_path):
    good = archive(tmp_path / "d.zip", {"a.png": png()}).read_bytes()
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    (tmp_path / "photo.png").write_bytes(png())
    (tmp_path / "x.rar").write_bytes(b"Rar!\x1a\x07\x00" + b"\0" * 100)
    for name, words in [("cut.zip", ["cut.zip"]), ("photo.png", ["not an archive", "zip"]),
                        ("x.rar", ["RAR", "zip -r"])]:  # fmt: skip
        with pytest.raises(InputError) as err:
            data.extract(tmp_path / name, tmp_path / name.replace(".", "_"))
        for word in words:
            assert word in str(err.value), (name, str(err.value))


def test_unsafe_paths_are_refused(tmp_path):
    path = archive(tmp_path / "d.tar", {"../escape.png": png()})
    with pytest.raises(InputError, match="unsafe path"):
        load(path, tmp_path)
    assert not (tmp_path / "escape.png").exists()


def test_transparent_pixels_are_grey_and_masked(tmp_path):
    images = {i.name: i for i in load(dataset(tmp_path / "d.zip"), tmp_path)}
    cutout = images["cutout.png"]
    assert cutout.image.getpixel((0, 0)) == data.NEUTRAL
    prepared = data.prepare(cutout, data.Sample(0, 64, 64))
    mask = prepared["mask"][0]
    assert mask[0, 0] == 0 and mask[32, 32] == 1  # corner transparent, centre opaque
    assert images["red.png"].mask is None


def test_masked_loss_ignores_what_transparent_pixels_predict():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1  # left half opaque
    error = torch.ones(1, 4, 8, 8)
    plain = masked_mean(error, mask)
    error[..., :, 4:] = 1000.0  # the latents under the transparent half: wildly wrong
    assert torch.allclose(masked_mean(error, mask), plain)
    error[..., :, :4] = 2.0
    assert torch.allclose(masked_mean(error, mask), 2 * plain)


def test_fully_transparent_images_are_refused(tmp_path):
    path = archive(tmp_path / "d.zip", {"ghost.png": png(mode="RGBA", shape=False)})
    with pytest.raises(InputError, match="ghost.png is fully transparent"):
        load(path, tmp_path)


@pytest.mark.parametrize("text", ["", "abc", "512,70", "32", "512;768", "8192"])
def test_bad_resolutions_are_refused_with_an_example(text):
    with pytest.raises(InputError, match="'512,768,1024'"):
        data.parse_resolutions(text)


def test_buckets_never_upscale():
    assert data.parse_resolutions("1024, 512,768") == (512, 768, 1024)
    wide = Image.new("RGB", (1400, 800))
    sizes = data.buckets_for(wide, (512, 768, 1024))
    assert len(sizes) == 3 and all(w <= 1400 and h <= 800 and w > h for w, h in sizes)
    small = Image.new("RGB", (300, 200))
    assert data.buckets_for(small, (512, 1024)) == [(256, 192)]  # own size, rounded down
    image = Image.new("RGB", (700, 700))
    assert data.buckets_for(image, (512, 768, 1024)) == [(512, 512)]


def test_batches_are_the_same_however_they_are_split_or_resumed():
    samples = [data.Sample(i, 64, 64) for i in range(5)] + [data.Sample(9, 128, 64)]
    schedule = data.Schedule(samples, batch_size=2, seed=3)
    again = data.Schedule(samples, batch_size=2, seed=3)
    steps = [schedule.batch(s) for s in range(12)]
    assert steps == [again.batch(s) for s in reversed(range(12))][::-1]
    assert all(len({(s.width, s.height) for s in batch}) == 1 for batch in steps)
    one_epoch = [s for batch in steps[: schedule.per_epoch] for s in batch]
    assert set(one_epoch) == set(samples)  # every sample once per epoch (plus top-ups)
    draws = [torch.rand(3, generator=data.sample_generator(3, 5, p)) for p in (0, 1, 0)]
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])

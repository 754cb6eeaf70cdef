import logging
import os

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.request.imaging import (
    MAX_INPUT_BYTES,
    MAX_INPUT_PIXELS,
    load_image,
    load_mask,
    resize_image,
)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="models")
    return caplog


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def half_transparent_rgba():
    pixels = np.zeros((40, 60, 4), dtype=np.uint8)
    pixels[..., 0] = 200  # red everywhere, opaque only on the left half
    pixels[:, :30, 3] = 255
    return Image.fromarray(pixels, "RGBA")


def test_rgb_png_passes_through_unchanged(tmp_path, logs):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = load_image(save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert image.mode == "RGB" and image.size == (30, 20)
    assert np.array_equal(np.asarray(image), pixels)
    assert logs.messages == []


def test_rgba_transparent_areas_become_white(tmp_path, logs):
    image = load_image(save(half_transparent_rgba(), tmp_path / "a.png"))
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert (pixels[:, 30:] == 255).all()
    assert (pixels[:, :30] == (200, 0, 0)).all()
    assert "Input image mode RGBA: transparent areas composited on white" in logs.messages


def test_la_composited_on_white(tmp_path):
    pixels = np.zeros((10, 10, 2), dtype=np.uint8)  # black, fully transparent
    pixels[:5, :, 1] = 255  # top half opaque
    image = load_image(save(Image.fromarray(pixels, "LA"), tmp_path / "a.png"))
    out = np.asarray(image)
    assert image.mode == "RGB"
    assert (out[:5] == 0).all() and (out[5:] == 255).all()


def test_palette_with_transparency_composited_on_white(tmp_path, logs):
    palette_image = Image.new("P", (10, 10), 0)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.paste(1, (0, 0, 5, 10))  # left half blue, right half index 0
    palette_image.info["transparency"] = 0  # index 0 is transparent
    path = save(palette_image, tmp_path / "a.png", transparency=0)
    out = np.asarray(load_image(path))
    assert (out[:, :5] == (0, 0, 255)).all()
    assert (out[:, 5:] == 255).all()
    assert any("mode P: transparent areas composited on white" in m for m in logs.messages)


def test_palette_without_transparency(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = np.asarray(load_image(save(image, tmp_path / "a.png")))
    assert (out == (10, 200, 30)).all()


def test_cmyk_converted(tmp_path, logs):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image = load_image(save(cmyk, tmp_path / "a.jpg", quality=95))
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert image.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60
    assert "Input image mode CMYK: CMYK converted to RGB" in logs.messages


def test_16bit_greyscale_scaled_not_clipped(tmp_path, logs):
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    source = Image.fromarray(gradient)  # uint16 -> "I;16"
    path = save(source, tmp_path / "a.png")
    assert Image.open(path).mode.startswith("I")  # 16-bit survived the round trip
    out = np.asarray(load_image(path))[..., 0].astype(int)
    assert out.min() == 0 and out.max() == 255
    assert abs(out[0, 128] - 128) <= 2
    assert (out[0] < 255).mean() > 0.9  # not clipped to white
    assert any("16-bit greyscale" in m and "scaled to 8-bit" in m for m in logs.messages)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_modes_in_memory_scaled(tmp_path, mode):
    values = np.array([[0, 32896, 65535]], dtype=">u2" if mode == "I;16B" else "<u2")
    image = Image.frombytes(mode, (3, 1), values.tobytes())
    path = save(image, tmp_path / "a.tiff")
    out = np.asarray(load_image(path))[0, :, 0]
    assert list(out) == [0, 128, 255]


def test_32bit_int_greyscale(tmp_path):
    values = np.array([[0, 30000, 60000]], dtype=np.int32)
    out = np.asarray(load_image(save(Image.fromarray(values, "I"), tmp_path / "a.tiff")))
    assert list(out[0, :, 0]) == [0, 117, 233]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # 0-1 float
        ([0.0, 100.0, 255.0], [0, 100, 255]),  # already 0-255
        ([-1.0, 0.0, 1.0], [0, 128, 255]),  # unknown range: stretched
    ],
)
def test_float_greyscale(tmp_path, values, expected):
    image = Image.fromarray(np.array([values], dtype=np.float32), "F")
    out = np.asarray(load_image(save(image, tmp_path / "a.tiff")))
    assert list(out[0, :, 0]) == expected


def test_bilevel_and_greyscale_to_rgb(tmp_path, logs):
    bilevel = Image.new("1", (8, 8), 0)
    bilevel.paste(1, (0, 0, 4, 8))
    out = np.asarray(load_image(save(bilevel, tmp_path / "a.png")))
    assert out.shape == (8, 8, 3) and (out[:, :4] == 255).all() and (out[:, 4:] == 0).all()
    grey = load_image(save(Image.new("L", (8, 8), 77), tmp_path / "b.png"))
    assert grey.mode == "RGB" and (np.asarray(grey) == 77).all()
    assert "Input image mode L: greyscale converted to RGB" in logs.messages


def test_exif_rotation_applied(tmp_path, logs):
    source = Image.new("RGB", (60, 40), (0, 128, 0))
    exif = source.getexif()
    exif[0x0112] = 6
    path = save(source, tmp_path / "a.jpg", exif=exif)
    image = load_image(path)
    assert image.size == (40, 60)
    assert any("EXIF orientation (6)" in m and "60x40 -> 40x60" in m for m in logs.messages)


def test_animated_uses_first_frame(tmp_path, logs):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = np.asarray(load_image(path))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50
    assert "Input image has 2 frames: using the first" in logs.messages


# --- Errors: always InputError naming the input, never a raw PIL exception ---


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"^photo file 'nope.png' was not found"):
        load_image(tmp_path / "nope.png", input_name="photo")


@pytest.mark.parametrize("path", [None, ""])
def test_no_file_given(path):
    with pytest.raises(InputError, match="^image is missing"):
        load_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="^image is an empty file"):
        load_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "a.png"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(InputError, match="^image is not a readable image file") as error:
        load_image(path)
    assert "PNG, JPEG, WebP" in str(error.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(InputError, match="^image is not a readable image file"):
        load_image(path)


def test_heic_named(tmp_path):
    path = tmp_path / "a.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))
    with pytest.raises(InputError, match="HEIC") as error:
        load_image(path)
    assert "JPEG" in str(error.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png(tmp_path, keep):
    noise = np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = save(Image.fromarray(noise), tmp_path / "full.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="^image could not be decoded: the file is truncated"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = save(Image.fromarray(noise), tmp_path / "full.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="^image could not be decoded"):
        load_image(path)


def test_huge_dimensions_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (9000, 9000)), tmp_path / "big.png")
    assert path.stat().st_size < 2**20
    assert MAX_INPUT_PIXELS < 9000 * 9000
    with pytest.raises(InputError, match=r"^image is too large \(9000x9000\)") as error:
        load_image(path)
    assert "64 megapixels" in str(error.value) and "Downscale" in str(error.value)


@pytest.mark.parametrize("side", [10000, 20000])
def test_beyond_pil_bomb_limit_is_input_error(tmp_path, side):
    # Past PIL's own limit Image.open warns (10000^2), past twice it refuses (20000^2).
    path = save(Image.new("1", (side, side)), tmp_path / "bomb.png")
    with pytest.raises(InputError, match="^mask is too large"):
        load_mask(path, (64, 64))


def test_file_too_many_bytes(tmp_path):
    path = tmp_path / "a.png"
    with open(path, "wb") as file:
        file.truncate(MAX_INPUT_BYTES + 1)  # sparse: no real disk use
    with pytest.raises(InputError, match="^image is 64 MiB, over the limit of 64 MiB"):
        load_image(path)


# --- resize_image ---


def test_resize_image(logs):
    image = Image.new("RGB", (100, 50), (1, 2, 3))
    assert resize_image(image, (100, 50)) is image
    assert logs.messages == []
    resized = resize_image(image, (40, 20))
    assert resized.size == (40, 20)
    assert logs.messages == ["Image resized from 100x50 to 40x20"]


# --- load_mask ---


def binary_mask(size=(64, 32)):
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return mask


def test_mask_same_size_is_l_and_binary(tmp_path, logs):
    mask = load_mask(save(binary_mask(), tmp_path / "m.png"), (64, 32))
    assert mask.mode == "L" and mask.size == (64, 32)
    assert set(np.unique(np.asarray(mask))) == {0, 255}
    assert not any("resized" in m for m in logs.messages)


def test_mask_resized_with_nearest_stays_binary(tmp_path, logs):
    mask = load_mask(save(binary_mask().convert("RGB"), tmp_path / "m.png"), (100, 37))
    assert mask.size == (100, 37)
    assert set(np.unique(np.asarray(mask))) == {0, 255}
    assert "Input mask resized from 64x32 to 100x37 to match the image" in logs.messages


def test_mask_transparent_background_means_keep(tmp_path):
    strokes = np.zeros((10, 10, 4), dtype=np.uint8)
    strokes[:, :3] = 255  # opaque white strokes on the left, transparent elsewhere
    mask = load_mask(save(Image.fromarray(strokes, "RGBA"), tmp_path / "m.png"), (10, 10))
    out = np.asarray(mask)
    assert (out[:, :3] == 255).all() and (out[:, 3:] == 0).all()


def test_all_black_mask_logged(tmp_path, logs):
    load_mask(save(Image.new("L", (8, 8), 0), tmp_path / "m.png"), (8, 8))
    assert "Input mask is all black: nothing will be repainted" in logs.messages


def test_mask_errors_name_the_mask(tmp_path):
    path = tmp_path / "m.png"
    path.write_text("nope")
    with pytest.raises(InputError, match="^mask is not a readable image file"):
        load_mask(path, (8, 8))


def test_no_file_handles_left_open(tmp_path):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    path = save(Image.new("RGB", (8, 8)), tmp_path / "a.png")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        load_image(path)
    assert len(os.listdir("/proc/self/fd")) == before


def test_greyscale_mask_is_not_reported_as_converted(tmp_path, logs):
    path = tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(path)
    load_mask(path, (32, 32))
    assert not [m for m in logs.messages if "converted" in m]
    Image.new("RGB", (32, 32), (255, 255, 255)).convert("P").save(path)
    load_mask(path, (32, 32))
    assert any("palette colours converted" in m for m in logs.messages)

import tempfile

import numpy as np
import pytest
from PIL import Image

from models.request.outputs import save_images


def noise(seed=0, size=(64, 48)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("output_format", "pil_format"), [("webp", "WEBP"), ("jpg", "JPEG"), ("png", "PNG")]
)
def test_formats_and_names(tmp_path, output_format, pil_format):
    images = [noise(0), noise(1)]
    paths = save_images(images, output_format=output_format, directory=tmp_path)
    assert paths == [tmp_path / f"out-0.{output_format}", tmp_path / f"out-1.{output_format}"]
    for path in paths:
        with Image.open(path) as saved:
            assert saved.format == pil_format
            assert saved.size == (64, 48)


def test_default_is_webp():
    (path,) = save_images([noise()])
    assert path.name == "out-0.webp"


def test_indices_name_files(tmp_path):
    paths = save_images([noise(0), noise(1)], indices=[3, 7], directory=tmp_path)
    assert [path.name for path in paths] == ["out-3.webp", "out-7.webp"]


def test_indices_must_match_images(tmp_path):
    with pytest.raises(ValueError):
        save_images([noise()], indices=[0, 1], directory=tmp_path)


def test_fresh_directory_per_call():
    first = save_images([noise()])
    second = save_images([noise()])
    assert first[0].parent != second[0].parent
    assert first[0].parent.name.startswith("out-")
    assert first[0].exists() and second[0].exists()


def test_directory_created(tmp_path):
    (path,) = save_images([noise()], directory=tmp_path / "a" / "b")
    assert path.exists()


def test_quality_affects_jpg_size(tmp_path):
    low = save_images([noise()], output_format="jpg", output_quality=10, directory=tmp_path / "l")
    high = save_images([noise()], output_format="jpg", output_quality=95, directory=tmp_path / "h")
    assert low[0].stat().st_size < high[0].stat().st_size


def test_quality_affects_webp_size(tmp_path):
    low = save_images([noise()], output_format="webp", output_quality=10, directory=tmp_path / "l")
    high = save_images([noise()], output_format="webp", output_quality=95, directory=tmp_path / "h")
    assert low[0].stat().st_size < high[0].stat().st_size


def test_jpg_from_rgba_is_rgb(tmp_path):
    rgba = noise().convert("RGBA")
    (path,) = save_images([rgba], output_format="jpg", directory=tmp_path)
    with Image.open(path) as saved:
        assert saved.mode == "RGB"


def test_png_is_lossless_and_ignores_quality(tmp_path):
    image = noise()
    (path,) = save_images([image], output_format="png", output_quality=1, directory=tmp_path)
    with Image.open(path) as saved:
        assert saved.mode == "RGB"
        assert np.array_equal(np.asarray(saved), np.asarray(image))


def test_empty_list(tmp_path):
    assert save_images([], directory=tmp_path) == []


def test_a_failed_save_leaves_no_folder_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cmyk = noise().convert("CMYK")  # PNG cannot hold CMYK: the second image fails
    with pytest.raises(OSError):
        save_images([noise(), cmyk], output_format="png")
    assert list(tmp_path.iterdir()) == []

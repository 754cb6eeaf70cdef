import logging

import pytest
from PIL import Image

from models.errors import InputError
from models.request.sizes import (
    ASPECT_RATIOS,
    MATCH_INPUT,
    MAX_SIDE,
    MEGAPIXELS,
    round_to_multiple,
    size_for_aspect_ratio,
    size_for_image,
)

TABLE = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="models")
    return caplog


def test_table_is_exact_and_ordered():
    assert list(ASPECT_RATIOS.items()) == list(TABLE.items())
    assert MAX_SIDE == 1440


@pytest.mark.parametrize("aspect_ratio", TABLE)
@pytest.mark.parametrize("megapixels", MEGAPIXELS)
def test_size_for_aspect_ratio(aspect_ratio, megapixels):
    width, height = TABLE[aspect_ratio]
    expected = (width, height) if megapixels == "1" else (width // 2, height // 2)
    assert size_for_aspect_ratio(aspect_ratio, megapixels) == expected
    assert all(side % 16 == 0 for side in expected)


def test_unknown_aspect_ratio_lists_choices():
    with pytest.raises(InputError, match="aspect_ratio") as error:
        size_for_aspect_ratio("7:3", "1")
    assert '"16:9"' in str(error.value) and '"9:21"' in str(error.value)


@pytest.mark.parametrize("megapixels", ["2", "0.5", "", MATCH_INPUT])
def test_unknown_megapixels_lists_choices(megapixels):
    with pytest.raises(InputError, match="megapixels") as error:
        size_for_aspect_ratio("1:1", megapixels)
    assert '"1"' in str(error.value) and '"0.25"' in str(error.value)


def test_size_for_image_rejects_unknown_megapixels():
    with pytest.raises(InputError, match="megapixels") as error:
        size_for_image(100, 100, multiple=16, megapixels="4")
    assert MATCH_INPUT in str(error.value)


def test_round_to_multiple(logs):
    assert round_to_multiple(1024, 768, 16) == (1024, 768)
    assert logs.messages == []
    assert round_to_multiple(1001, 1000, 8) == (1000, 1000)
    assert round_to_multiple(1001, 1000, 16) == (1008, 1008)  # 1000 is a tie: rounds up
    assert round_to_multiple(1007, 1009, 16) == (1008, 1008)
    assert round_to_multiple(3, 20, 16) == (16, 16)  # never below the multiple
    assert "Size 1001x1000 rounded to 1000x1000 (multiple of 8)" in logs.messages


def test_large_image_scaled_down_to_fit(logs):
    assert size_for_image(3000, 2000, multiple=16) == (1440, 960)
    assert "Input image 3000x2000 scaled down to 1440x960 to fit 1440x1440" in logs.messages


def test_odd_size_rounded(logs):
    assert size_for_image(1001, 1000, multiple=16) == (1008, 1008)
    assert logs.messages == ["Size 1001x1000 rounded to 1008x1008 (multiple of 16)"]


def test_small_image_not_upscaled_but_rounded(logs):
    assert size_for_image(500, 300, multiple=16) == (496, 304)
    assert logs.messages == ["Size 500x300 rounded to 496x304 (multiple of 16)"]


def test_exact_size_is_silent(logs):
    assert size_for_image(1024, 768, multiple=16) == (1024, 768)
    assert logs.messages == []


def test_megapixels_scales_up(logs):
    assert size_for_image(512, 512, multiple=16, megapixels="1") == (1024, 1024)
    assert size_for_image(512, 512, multiple=16, megapixels="0.25") == (512, 512)
    assert "Input image 512x512 scaled up to 1024x1024 (about 1 megapixels)" in logs.messages


def test_megapixels_scales_down_keeping_aspect():
    width, height = size_for_image(4000, 3000, multiple=16, megapixels="1")
    assert abs(width * height - 1024 * 1024) / (1024 * 1024) < 0.03
    assert abs(width / height - 4 / 3) < 0.02


def test_megapixels_then_capped(logs):
    # 1 MP at 3:1 would be 1774x591: the long side is capped to 1440.
    assert size_for_image(3000, 1000, multiple=16, megapixels="1") == (1440, 480)
    assert any("to fit 1440x1440" in message for message in logs.messages)


def test_cap_respects_multiple_that_does_not_divide_max_side():
    # 1440 is not a multiple of 64: the result must still not exceed 1440.
    assert size_for_image(5000, 5000, multiple=64) == (1408, 1408)


@pytest.mark.parametrize("multiple", [8, 16, 32, 64])
@pytest.mark.parametrize("megapixels", [MATCH_INPUT, *MEGAPIXELS])
@pytest.mark.parametrize(
    "size", [(1, 1), (17, 4000), (4000, 17), (500, 300), (1440, 1440), (1441, 1439), (9000, 6000)]
)
def test_result_is_multiple_and_within_max_side(size, megapixels, multiple):
    width, height = size_for_image(*size, multiple=multiple, megapixels=megapixels)
    assert width % multiple == 0 and height % multiple == 0
    assert multiple <= width <= MAX_SIDE and multiple <= height <= MAX_SIDE
    if megapixels == MATCH_INPUT:
        # Never upscaled beyond rounding to the multiple.
        assert width <= max(size[0] + multiple // 2, multiple)
        assert height <= max(size[1] + multiple // 2, multiple)


def test_custom_max_side():
    assert size_for_image(2000, 1000, multiple=16, max_side=1024) == (1024, 512)


def test_within_side_keeps_the_aspect_ratio_on_the_multiple():
    from models.request.sizes import within_side

    assert within_side(1024, 1024, 128, 16) == (128, 128)
    assert within_side(1344, 768, 128, 16) == (128, 80)  # 73.1 rounds to 80
    assert within_side(640, 1536, 128, 16) == (48, 128)  # 53.3 rounds to 48
    assert within_side(1000, 10, 128, 16) == (128, 16)  # never below one multiple


def test_a_job_past_the_native_side_runs_smaller_with_its_images_and_is_logged(caplog):
    from models.request.job import Job, at_native_size

    image, mask = Image.new("RGB", (512, 256), "red"), Image.new("L", (512, 256), 255)
    control = Image.new("RGB", (512, 256), "blue")
    job = Job(mode="inpaint", prompt="x", width=512, height=256, num_outputs=1, steps=1,
              guidance=0, seed=0, image=image, mask=mask,
              conditioning={"control_image": control})  # fmt: skip
    assert at_native_size(job, None, 16) == (job, None)
    assert at_native_size(job, 512, 16) == (job, None)
    with caplog.at_level(logging.INFO, logger="models"):
        native, upscale = at_native_size(job, 128, 16)
    assert upscale == (512, 256)
    assert (native.width, native.height) == native.image.size == native.mask.size == (128, 64)
    assert native.conditioning["control_image"].size == (128, 64)
    assert native.mask.getextrema() == (255, 255)  # a mask stays binary
    assert "drawing at 128x64, then upscaling to 512x256" in caplog.text

"""cog.yaml and the predictors' input schemas agree with models/ (specs and tables)."""

from __future__ import annotations

import os
import re

import cog
import pytest
import yaml

import predict
from models.flux.kontext import MATCH_INPUT_IMAGE
from models.request.imaging import SUPPORTED_FORMATS
from models.request.outputs import OUTPUT_FORMATS
from models.request.sizes import ASPECT_RATIOS, MATCH_INPUT, MEGAPIXELS
from models.settings import REPO_ROOT
from models.specs import SPECS
from tools.schema import openapi_schema
from tools.select import cog_sdk_version, render, selected_model, user_environment, write


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_selectable_cog_yaml_points_at_an_existing_predictor(name):
    config = yaml.safe_load(render(name))
    build = config["build"]
    assert build["gpu"] is True
    # Every 3.12 has tarfile's filter="data"; "3.11" would not promise 3.11.4+.
    assert build["python_version"] == "3.12"
    assert (REPO_ROOT / build["python_requirements"]).is_file()
    assert build["sdk_version"] == cog.__version__ == cog_sdk_version()
    # Cog 0.20+ names: `run:` (not the deprecated `predict:`), BaseRunner, run().
    assert "predict" not in config
    module, _, cls_name = config["run"].partition(":")
    assert module == "predict.py"
    cls = getattr(predict, cls_name)
    assert issubclass(cls, cog.BaseRunner) and not issubclass(cls, cog.BasePredictor)
    assert "run" in vars(cls) and "predict" not in vars(cls)
    assert config["environment"] == [f"MODEL_NAME={name}", "MALLOC_ARENA_MAX=1"]
    assert config["train"] == "train.py:train"  # one trainer for every variant


def test_checked_in_cog_yaml_is_the_generated_one():
    cog_yaml = REPO_ROOT / "cog.yaml"
    generated = render(selected_model(cog_yaml), environment=user_environment(cog_yaml))
    assert cog_yaml.read_text() == generated


def test_the_readmes_cog_yaml_additions_survive_script_select(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    additions = re.findall(r"add\s+`- ([A-Z_]+=[^`]*)` under `environment:`", readme)
    assert {a.split("=")[0] for a in additions} == {"MODEL_WEIGHTS", "SAFETY_CHECKER"}
    cog_yaml = tmp_path / "cog.yaml"
    cog_yaml.write_text(
        (REPO_ROOT / "cog.yaml").read_text() + "".join(f"  - {a}\n" for a in additions)
    )
    assert write("tiny-sdxl", cog_yaml) == additions
    config = yaml.safe_load(cog_yaml.read_text())
    assert config["environment"] == ["MODEL_NAME=tiny-sdxl", "MALLOC_ARENA_MAX=1", *additions]
    assert config["run"] == "predict.py:SDXLPredictor"
    assert cog_yaml.read_text() == render("tiny-sdxl", environment=user_environment(cog_yaml))


def test_runtime_packages_are_pinned():
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", line), line


def _inputs(cls) -> tuple[dict, dict]:
    schema = openapi_schema(cls)
    components = schema["components"]["schemas"]
    return components["Input"], components


def _enum(components, prop) -> list:
    return components[prop["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"]


PREDICTORS = sorted({spec.predictor for spec in SPECS.values()})


@pytest.mark.parametrize("cls_name", PREDICTORS)
def test_every_input_is_documented(cls_name):
    schema, _ = _inputs(getattr(predict, cls_name))
    for name, prop in schema["properties"].items():
        assert len(prop.get("description", "")) > 20, name
        if prop.get("type") in {"integer", "number"} and name != "seed":
            assert "minimum" in prop and "maximum" in prop, name


@pytest.mark.parametrize("cls_name", PREDICTORS)
def test_shared_choices_match_the_model_tables(cls_name):
    schema, components = _inputs(getattr(predict, cls_name))
    props = schema["properties"]
    assert _enum(components, props["output_format"]) == list(OUTPUT_FORMATS)
    if "aspect_ratio" in props:
        ratios = _enum(components, props["aspect_ratio"])
        assert ratios in (list(ASPECT_RATIOS), [MATCH_INPUT_IMAGE, *ASPECT_RATIOS])
    if "megapixels" in props:
        # Redux has no input size to match (cog-flux's Redux offers 1 and 0.25).
        sizes = [*MEGAPIXELS] if "redux_image" in props else [*MEGAPIXELS, MATCH_INPUT]
        assert _enum(components, props["megapixels"]) == sizes
    seed = props["seed"]
    assert seed["nullable"] and (seed["minimum"], seed["maximum"]) == (0, 2**32 - 1)
    assert "seed" not in schema["required"]
    # Every model needs a prompt but Redux, where it is an optional steer.
    assert ("prompt" in schema["required"]) == ("redux_image" not in props)
    names = ("image", "input_image", "mask", "control_image", "redux_image")
    pictures = [name for name in names if name in props]
    for name in pictures:
        # A picture a model cannot do without is required; an optional one is nullable.
        required = name in schema["required"]
        assert props[name]["format"] == "uri" and props[name].get("nullable", False) != required
        if name != "mask":  # the formats load_image opens, said the same way in the README
            assert SUPPORTED_FORMATS in props[name]["description"]
    assert SUPPORTED_FORMATS in (REPO_ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_step_and_guidance_inputs_follow_the_spec(name):
    spec = SPECS[name]
    schema, _ = _inputs(getattr(predict, spec.predictor))
    steps = schema["properties"]["num_inference_steps"]
    assert (steps["default"], steps["maximum"]) == (spec.default_steps, spec.max_steps)
    assert steps["minimum"] == spec.min_steps
    guidance = schema["properties"].get("guidance") or schema["properties"].get("guidance_scale")
    if spec.guidance is None:
        assert guidance is None
    else:
        assert (guidance["default"], guidance["maximum"]) == (spec.guidance, spec.max_guidance)


def test_a_variant_served_by_another_class_fails_setup_with_the_fix(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "tiny-flux-schnell")
    with pytest.raises(ValueError) as err:
        predict.FluxDevPredictor().setup()
    message = str(err.value)
    assert "FluxSchnellPredictor" in message and "script/select tiny-flux-schnell" in message


def test_tests_do_not_inherit_the_shells_settings():
    from tests.conftest import DROPPED

    assert {"MODEL_WEIGHTS", "SAFETY_CHECKER", "MODEL_NAME", "WEIGHTS_DIR"} <= set(DROPPED)
    assert not set(DROPPED) & set(os.environ)


@pytest.mark.parametrize("cls_name", PREDICTORS)
def test_schema_is_byte_for_byte_the_committed_one(cls_name, tmp_path):
    """Every input name, type, range, default and description, and the train inputs, as
    `cog build` writes them: tests/schemas/<class>.json. A change to an input must change
    that file too (regenerate it with tools.schema.write_schema and review the diff)."""
    from tools.schema import write_schema
    from tools.select import TRAIN_REF

    written = write_schema(f"predict.py:{cls_name}", REPO_ROOT, into=tmp_path, train_ref=TRAIN_REF)
    committed = REPO_ROOT / "tests" / "schemas" / f"{cls_name}.json"
    assert written.read_bytes() == committed.read_bytes()


def test_the_readmes_variant_table_lists_every_variant_with_its_class():
    rows = re.findall(
        r"^\| `([a-z0-9-]+)` \| `(\w+)` \|", (REPO_ROOT / "README.md").read_text(), re.M
    )
    assert dict(rows) == {name: spec.predictor for name, spec in SPECS.items()}

"""tools.schema: the OpenAPI document `cog build` would write, and coglet obeying it."""

import json
from collections.abc import Iterator
from typing import Annotated, Any, Optional, Union

import cog
import pytest
from cog import BasePredictor, BaseRunner, Input, Path, Secret

from tools.schema import SchemaError, main, openapi_schema, to_json


class Toy(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="Text prompt"),
        image: Path | None = Input(description="Init image", default=None),
        strength: float = Input(default=0.8, ge=0.0, le=1.0),
        steps: int = Input(default=4, ge=1, le=50),
        aspect_ratio: str = Input(default="1:1", choices=["1:1", "16:9"]),
        seed: Optional[int] = Input(description="Random seed", default=None),  # noqa: UP045
        safety: bool = True,
    ) -> list[Path]:
        raise NotImplementedError


def inputs(target: Any) -> dict:
    return openapi_schema(target)["components"]["schemas"]["Input"]


def test_input_properties_match_the_go_generator():
    assert inputs(Toy)["properties"] == {
        "prompt": {"x-order": 0, "title": "Prompt", "type": "string", "description": "Text prompt"},
        "image": {
            "x-order": 1,
            "title": "Image",
            "type": "string",
            "format": "uri",
            "default": None,
            "nullable": True,
            "description": "Init image",
        },
        "strength": {
            "x-order": 2,
            "title": "Strength",
            "type": "number",
            "default": 0.8,
            "minimum": 0,
            "maximum": 1,
        },
        "steps": {
            "x-order": 3,
            "title": "Steps",
            "type": "integer",
            "default": 4,
            "minimum": 1,
            "maximum": 50,
        },
        "aspect_ratio": {
            "x-order": 4,
            "allOf": [{"$ref": "#/components/schemas/aspect_ratio"}],
            "default": "1:1",
        },
        "seed": {
            "x-order": 5,
            "title": "Seed",
            "type": "integer",
            "default": None,
            "nullable": True,
            "description": "Random seed",
        },
        "safety": {"x-order": 6, "title": "Safety", "type": "boolean", "default": True},
    }


def test_secret_input_is_written_as_go_writes_it():
    class P(BasePredictor):
        def predict(
            self,
            token: Optional[Secret] = Input(description="never logged", default=None),  # noqa: UP045
        ) -> str:
            raise NotImplementedError

    assert inputs(P)["properties"]["token"] == {
        "x-order": 0,
        "title": "Token",
        "type": "string",
        "format": "password",
        "writeOnly": True,
        "x-cog-secret": True,
        "default": None,
        "nullable": True,
        "description": "never logged",
    }


def test_required_order_enum_and_output():
    schema = openapi_schema(Toy)
    components = schema["components"]["schemas"]
    assert components["Input"]["title"] == "Input"
    assert components["Input"]["type"] == "object"
    assert components["Input"]["required"] == ["prompt"]
    assert list(components["Input"]["properties"]) == [
        "prompt", "image", "strength", "steps", "aspect_ratio", "seed", "safety"
    ]  # fmt: skip
    assert components["aspect_ratio"] == {
        "title": "aspect_ratio",
        "description": "An enumeration.",
        "enum": ["1:1", "16:9"],
        "type": "string",
    }
    assert components["Output"] == {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
    }
    assert list(components) == [
        "Input", "Output", "aspect_ratio", "PredictionRequest", "PredictionResponse",
        "Status", "HTTPValidationError", "ValidationError",
    ]  # fmt: skip


def test_document_skeleton():
    schema = openapi_schema(Toy)
    assert schema["openapi"] == "3.0.2"
    assert schema["info"] == {"title": "Cog", "version": cog.__version__}
    assert list(schema["paths"]) == [
        "/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel"
    ]  # fmt: skip
    post = schema["paths"]["/predictions"]["post"]
    assert post["operationId"] == "predict_predictions_post"
    assert post["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    assert "x-cog-streaming" not in post


def test_defaults_follow_go_rules():
    class P(BaseRunner):
        def run(
            self,
            seed: int = Input(default=None),  # None on a non-Optional type: still required
            note: str | None = Input(description="no default given"),
            tag: str | None = None,
            mask: Path | None = None,
            sizes: list[int] = Input(default=[512, 768]),
            choice: int = Input(default=2, choices=[1, 2]),
            scale: float = 7.0,
        ) -> str:
            raise NotImplementedError

    schema = openapi_schema(P)
    props = schema["components"]["schemas"]["Input"]["properties"]
    assert schema["components"]["schemas"]["Input"]["required"] == ["seed"]
    assert props["seed"] == {"x-order": 0, "title": "Seed", "type": "integer"}
    # Input() without default= emits no default; coglet then injects null itself.
    assert props["note"] == {
        "x-order": 1,
        "title": "Note",
        "type": "string",
        "nullable": True,
        "description": "no default given",
    }
    assert props["tag"]["default"] is None and props["mask"]["default"] is None
    assert props["sizes"] == {
        "x-order": 4,
        "title": "Sizes",
        "type": "array",
        "items": {"type": "integer"},
        "default": [512, 768],
    }
    assert schema["components"]["schemas"]["choice"]["type"] == "integer"
    assert schema["components"]["schemas"]["choice"]["enum"] == [1, 2]
    assert props["scale"]["default"] == 7 and isinstance(props["scale"]["default"], int)
    assert schema["components"]["schemas"]["Output"] == {"title": "Output", "type": "string"}


class Shared:
    note = Input(description="shared, no default")
    tag = Input(description="shared", default=None)


def test_shared_input_references_keep_their_defaults():
    class UsesShared(BaseRunner):
        def run(self, note: str | None = Shared.note, tag: str | None = Shared.tag) -> str:
            raise NotImplementedError

    props = inputs(UsesShared)["properties"]
    assert "default" not in props["note"]
    assert props["tag"]["default"] is None
    assert props["note"]["nullable"] is props["tag"]["nullable"] is True


def test_run_wins_and_both_is_an_error():
    class RunOnly(BaseRunner):
        def run(self, n: int) -> int:
            return n

    class Both(BasePredictor):
        def run(self, n: int) -> int:
            return n

        def predict(self, n: int) -> int:
            return n

    assert inputs(RunOnly)["properties"]["n"]["type"] == "integer"
    with pytest.raises(SchemaError, match="not both"):
        openapi_schema(Both)


def _run_with(annotation: Any, returns: Any = str) -> type:
    def run(self, x):
        raise NotImplementedError

    run.__annotations__ = {"x": annotation, "return": returns}
    return type("P", (BaseRunner,), {"run": run})


@pytest.mark.parametrize(
    ("annotation", "returns", "message"),
    [
        (Union[int, str], str, "input 'x': unions"),  # noqa: UP007
        (tuple[int, int], str, "input 'x': unsupported type"),
        (list[int | None], str, "input 'x': nested generics"),
        (int, str | None, "output must not be Optional"),
        (int, set[str], "output: unsupported type"),
    ],
)
def test_unsupported_annotations_are_named(annotation, returns, message):
    with pytest.raises(SchemaError, match=message):
        openapi_schema(_run_with(annotation, returns))


class Result(cog.BaseModel):
    image: Path


@pytest.mark.parametrize(
    ("annotation", "returns", "message"),
    [
        (cog.File, str, "input 'x': unsupported type File"),
        (dict, str, "input 'x': unsupported type dict"),
        (Any, str, "input 'x': unsupported type Any"),
        (Annotated[str, cog.Opaque], str, "input 'x': unsupported type Annotated"),
        (int, Iterator[Path], "output: unsupported type .*Iterator"),
        (int, cog.ConcatenateIterator[str], "output: unsupported type .*ConcatenateIterator"),
        (int, dict[str, Path], r"output: unsupported type dict\[str"),
    ],
)
def test_removed_types_raise(annotation, returns, message):
    # Only the types predict.py and train.py use are built; File and streams are not.
    with pytest.raises(SchemaError, match=message):
        openapi_schema(_run_with(annotation, returns))


def test_base_model_output_is_an_object_as_go_writes_it():
    # train.py returns one (TrainingOutput); Go: SchemaObject, fields in order, required
    # when without a default, the top level titled "Output".
    output = openapi_schema(_run_with(int, Result))["components"]["schemas"]["Output"]
    assert output == {
        "type": "object",
        "properties": {"image": {"type": "string", "format": "uri", "title": "Image"}},
        "required": ["image"],
        "title": "Output",
    }


def test_removed_modes_raise():
    class Streams(BaseRunner):
        @cog.streaming
        def run(self) -> str:
            raise NotImplementedError

    class TrainsOnly(BaseRunner):
        def train(self, data: Path) -> Path:
            raise NotImplementedError

    def train(data: Path) -> Path:
        raise NotImplementedError

    with pytest.raises(SchemaError, match="@cog.streaming is not supported"):
        openapi_schema(Streams)
    with pytest.raises(SchemaError, match=r"defines no run\(\) or predict\(\)"):
        openapi_schema(TrainsOnly)
    with pytest.raises(SchemaError, match="is not a predictor class"):
        openapi_schema(train)
    for flags in (["--mode", "train"], ["--train", "train.py:train"]):
        with pytest.raises(SystemExit) as exited:
            main(["predict.py:Predictor", *flags])  # argparse rejects them first
        assert exited.value.code == 2


def test_other_errors():
    class NoHint(BaseRunner):
        def run(self, x) -> str:
            raise NotImplementedError

    class BadChoices(BaseRunner):
        def run(self, x: float = Input(default=1.0, choices=[1.0, 2.0])) -> str:
            raise NotImplementedError

    with pytest.raises(SchemaError, match="input 'x' has no type annotation"):
        openapi_schema(NoHint)
    with pytest.raises(SchemaError, match="choices need a str or int"):
        openapi_schema(BadChoices)


def test_json_layout_matches_go():
    class P(BaseRunner):
        def run(self, zeta: str = Input(description="a<b & c>d"), alpha: int = 1) -> str:
            raise NotImplementedError

    text = to_json(openapi_schema(P))
    assert text.startswith('{"components":{"schemas":{"Input":{"properties":{"zeta":')
    assert '"alpha":{"default":1,"title":"Alpha","type":"integer","x-order":1}' in text
    assert "a\\u003cb \\u0026 c\\u003ed" in text
    assert json.loads(text) == openapi_schema(P)

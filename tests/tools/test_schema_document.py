"""tools/schema/document.py: the document written where coglet reads it, the command line,
train mode and the merged predict+train document, and coglet obeying what we write."""

import base64
import json
import textwrap
from typing import Any

import pytest

from tools import server
from tools.schema import SchemaError, load_target, main, openapi_schema, write_schema
from tools.server import http_json, running

# The end-to-end predictor: a real file, imported the way coglet imports it.
TOY_PREDICT = """
from __future__ import annotations

from cog import BaseRunner, Input, Path, Secret


class Predictor(BaseRunner):
    def setup(self) -> None:
        self.greeting = "hello"

    def run(
        self,
        prompt: str = Input(description="Text prompt"),
        strength: float = Input(default=0.8, ge=0.0, le=1.0),
        steps: int = Input(default=4, ge=1, le=50),
        aspect_ratio: str = Input(default="1:1", choices=["1:1", "16:9"]),
        seed: int | None = Input(default=None),
        token: Secret | None = Input(default=None),
    ) -> list[Path]:
        out = Path("out.txt")
        print(f"token is {token}")  # a Secret prints masked
        secret = token.get_secret_value() if token is not None else ""
        out.write_text(f"{self.greeting} {prompt} {steps} {aspect_ratio} {seed} {secret[::-1]}")
        return [out]
"""


@pytest.fixture
def toy_project(tmp_path):
    (tmp_path / "predict.py").write_text(textwrap.dedent(TOY_PREDICT))
    return tmp_path


def test_write_schema_and_cli(toy_project, capsys):
    path = write_schema("predict.py:Predictor", toy_project)
    assert path == toy_project / ".cog" / "openapi_schema.json"
    written = json.loads(path.read_text())
    assert written == openapi_schema(load_target("predict.py:Predictor", toy_project))
    assert written["components"]["schemas"]["Input"]["required"] == ["prompt"]

    path.unlink()
    assert main(["predict.py:Predictor", "--root", str(toy_project)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert json.loads(path.read_text()) == written

    with pytest.raises(SchemaError, match="no 'Missing'"):
        load_target("predict.py:Missing", toy_project)


def _rejected_field(status: int, body: Any) -> str:
    assert status == 422, body
    (error,) = body["detail"]
    return error["loc"][-1]


@pytest.mark.server  # starts the real coglet HTTP server as a subprocess
def test_coglet_validates_against_our_schema(toy_project, tmp_path):
    write_schema("predict.py:Predictor", toy_project)
    server_log = tmp_path / "server.log"
    with running("predict.py:Predictor", root=toy_project, log_path=server_log) as url:
        status, served = http_json("GET", url + "/openapi.json")
        assert status == 200, server_log.read_text()
        props = served["components"]["schemas"]["Input"]["properties"]
        assert (props["steps"]["minimum"], props["steps"]["maximum"]) == (1, 50)
        assert served["components"]["schemas"]["aspect_ratio"]["enum"] == ["1:1", "16:9"]
        assert served == json.loads((toy_project / ".cog/openapi_schema.json").read_text())

        def predict(**values):
            return server.predict(url, values)

        assert _rejected_field(*predict(prompt="a", steps="four")) == "steps"
        assert _rejected_field(*predict(prompt="a", strength=1.5)) == "strength"
        assert _rejected_field(*predict(prompt="a", aspect_ratio="4:3")) == "aspect_ratio"
        status, body = predict(steps=4)
        assert _rejected_field(status, body) == "prompt"
        assert body["detail"][0] == {
            "loc": ["body", "input", "prompt"],
            "msg": "Field required",
            "type": "value_error.missing",
        }

        status, body = predict(prompt="cat", steps=7, aspect_ratio="16:9", unknown="dropped")
        assert status == 200, f"{body}\n{server_log.read_text()}"
        assert body["status"] == "succeeded", body
        assert len(body["output"]) == 1

        # A Secret arrives as one, masked in the logs, its value intact.
        status, body = predict(prompt="cat", token="hunter2")
        assert body["status"] == "succeeded", body
        assert "hunter2" not in body["logs"] and "token is **" in body["logs"]
        text = base64.b64decode(body["output"][0].partition(",")[2]).decode()
        assert text.endswith("2retnuh")


def test_train_mode_renames_endpoints_and_components_as_go_does():
    import train

    schema = openapi_schema(train.train, mode="train")
    assert list(schema["paths"]) == ["/", "/health-check", "/trainings",
                                     "/trainings/{training_id}/cancel"]  # fmt: skip
    post = schema["paths"]["/trainings"]["post"]
    assert (post["summary"], post["operationId"]) == ("Train", "train_trainings_post")
    assert post["description"] == "Run a single training on the model"
    cancel = schema["paths"]["/trainings/{training_id}/cancel"]["post"]
    assert cancel["parameters"][0]["name"] == "training_id"
    assert cancel["parameters"][0]["schema"]["title"] == "Training Id"
    components = schema["components"]["schemas"]
    assert list(components)[:2] == ["TrainingInput", "TrainingOutput"]
    assert components["TrainingInput"]["title"] == "TrainingInput"
    assert components["TrainingInput"]["required"] == ["input_images"]
    # Go's SchemaObject for a cog.BaseModel output keeps the top-level title "Output".
    assert components["TrainingOutput"] == {
        "type": "object",
        "properties": {"weights": {"type": "string", "format": "uri", "title": "Weights"}},
        "required": ["weights"],
        "title": "Output",
    }
    response = components["TrainingResponse"]
    assert response["title"] == "TrainingResponse"
    assert response["properties"]["output"] == {"$ref": "#/components/schemas/TrainingOutput"}
    assert components["TrainingRequest"]["properties"]["input"] == {
        "$ref": "#/components/schemas/TrainingInput"
    }
    assert "Input" not in components and "PredictionRequest" not in components


def test_predict_and_train_merge_into_one_indented_sorted_document(tmp_path):
    from models.settings import REPO_ROOT

    path = write_schema("predict.py:FluxDevPredictor", REPO_ROOT, into=tmp_path,
                        train_ref="train.py:train")  # fmt: skip
    text = path.read_text()
    document = json.loads(text)
    # Go re-reads both documents into maps: every key sorted, MarshalIndent's two spaces.
    assert text == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    schemas = document["components"]["schemas"]
    for name in ("Input", "Output", "TrainingInput", "TrainingOutput", "PredictionRequest",
                 "TrainingRequest", "optimizer", "aspect_ratio"):  # fmt: skip
        assert name in schemas, name
    assert {"/predictions", "/trainings"} <= set(document["paths"])

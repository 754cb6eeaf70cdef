"""What of the document is the same for every predictor (paths, fixed components, the
train-mode names), and the bytes Go writes: key order, separators and escapes."""

import json
from typing import Any

from tools.schema.types import ref


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


# Everything but Input, Output and the choice enums is the same for every predictor.
# fmt: off
_STR, _DATE = {"type": "string"}, {"type": "string", "format": "date-time"}


_OK = {"description": "Successful Response", **_json({})}


_422 = {"description": "Validation Error", **_json(ref("HTTPValidationError"))}


FIXED_SCHEMAS = {
    "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
        "id": {"title": "Id", **_STR}, "input": ref("Input")}},
    "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
        "input": ref("Input"), "output": ref("Output"), "id": {"title": "Id", **_STR},
        "version": {"title": "Version", **_STR}, "created_at": {"title": "Created At", **_DATE},
        "started_at": {"title": "Started At", **_DATE},
        "completed_at": {"title": "Completed At", **_DATE}, "status": {"title": "Status", **_STR},
        "error": {"title": "Error", **_STR}, "logs": {"title": "Logs", **_STR},
        "metrics": {"title": "Metrics", "type": "object"}}},
    "Status": {"title": "Status", "description": "An enumeration.", "enum": [
        "starting", "processing", "succeeded", "canceled", "failed"], "type": "string"},
    "HTTPValidationError": {"title": "HTTPValidationError", "type": "object", "properties": {
        "detail": {"title": "Detail", "type": "array", "items": ref("ValidationError")}}},
    "ValidationError": {"title": "ValidationError", "required": ["loc", "msg", "type"],
                        "type": "object", "properties": {
        "loc": {"title": "Location", "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"title": "Message", **_STR}, "type": {"title": "Error Type", **_STR}}},
}


PATHS = {
    "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _OK}}},
    "/health-check": {"get": {"summary": "Healthcheck",
                              "operationId": "healthcheck_health_check_get",
                              "responses": {"200": _OK}}},
    "/predictions": {"post": {
        "summary": "Predict", "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": _json(ref("PredictionRequest")),
        "responses": {"200": {"description": "Successful Response",
                              **_json(ref("PredictionResponse"))}, "422": _422}}},
    "/predictions/{prediction_id}/cancel": {"post": {
        "summary": "Cancel", "operationId": "cancel_predictions__prediction_id__cancel_post",
        "parameters": [{"required": True, "schema": {"title": "Prediction Id", **_STR},
                        "name": "prediction_id", "in": "path"}],
        "responses": {"200": _OK, "422": _422}}},
}


# Train mode renames the endpoint and the components (Go: buildOpenAPISpec's isTrain).
_TRAIN_NAMES = {
    "/predictions": "/trainings",
    "/predictions/{prediction_id}/cancel": "/trainings/{training_id}/cancel",
    "Predict": "Train",
    "Run a single prediction on the model": "Run a single training on the model",
    "predict_predictions_post": "train_trainings_post",
    "cancel_predictions__prediction_id__cancel_post": "cancel_trainings__training_id__cancel_post",
    "prediction_id": "training_id",
    "Prediction Id": "Training Id",
    "PredictionRequest": "TrainingRequest",
    "PredictionResponse": "TrainingResponse",
    "#/components/schemas/PredictionRequest": "#/components/schemas/TrainingRequest",
    "#/components/schemas/PredictionResponse": "#/components/schemas/TrainingResponse",
    "#/components/schemas/Input": "#/components/schemas/TrainingInput",
    "#/components/schemas/Output": "#/components/schemas/TrainingOutput",
}


def renamed_for_training(value: Any) -> Any:
    if isinstance(value, dict):
        return {_TRAIN_NAMES.get(k, k): renamed_for_training(v) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed_for_training(v) for v in value]
    return _TRAIN_NAMES.get(value, value) if isinstance(value, str) else value


def to_json_indented(schema: dict) -> str:
    """The merged document's bytes: Go re-reads both documents into plain maps and writes
    them with json.MarshalIndent(v, "", "  "), so every key is sorted and indented."""
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def to_json(schema: dict) -> str:
    """Serialize with Go's byte layout so the file diffs clean against `cog build`.

    Go writes plain maps with sorted keys and keeps insertion order only for
    `paths`, `components.schemas` and `properties`.
    """
    text = json.dumps(_go_order(schema), separators=(",", ":"), ensure_ascii=False)
    # Go's encoder escapes these even inside strings; JSON readers see no difference.
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_order(value: Any, ordered: bool = False) -> Any:
    if isinstance(value, list):
        return [_go_order(v) for v in value]
    if not isinstance(value, dict):
        return value
    keys = list(value) if ordered else sorted(value)
    return {
        k: _go_order(value[k], not ordered and k in ("paths", "schemas", "properties"))
        for k in keys
    }

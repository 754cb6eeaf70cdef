"""Write `.cog/openapi_schema.json` the way `cog build` does, without Docker or Go.

coglet validates request inputs only against that file, so a local
`python -m cog.server.http` answers bad inputs with 422 only once it exists.
The bytes match cog's Go generator (pkg/schema/openapi_spec.go) for what
predict.py uses: a predictor class with predict() or run(); str, int, float,
bool, cog.Path and cog.Secret inputs, also Optional[...] and list[...] of them; one such
value, a list of them, or a cog.BaseModel of them (train.py's output) as output; train
mode (a train() function) and the merged predict+train document of a cog.yaml with both.
Anything else raises SchemaError rather than write a document that would differ from Go's.

CLI: python -m tools.schema predict.py:Predictor [--train train.py:train] [--root DIR]
"""

from tools.schema.document import load_target, main, merged_schema, openapi_schema, write_schema
from tools.schema.go import to_json, to_json_indented
from tools.schema.types import SchemaError

__all__ = [
    "SchemaError",
    "load_target",
    "main",
    "merged_schema",
    "openapi_schema",
    "to_json",
    "to_json_indented",
    "write_schema",
]

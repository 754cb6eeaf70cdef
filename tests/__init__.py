"""The suite: one folder per package of models/ and tools/ (script/test runs it)."""

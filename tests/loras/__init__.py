"""Tests of models/loras."""

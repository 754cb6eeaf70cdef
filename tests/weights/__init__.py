"""Tests of models/weights."""

"""Tests of models/engine."""

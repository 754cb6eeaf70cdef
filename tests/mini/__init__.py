"""Tests of models/mini."""

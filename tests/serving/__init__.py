"""Tests of models/serving."""

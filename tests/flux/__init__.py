"""Tests of models/flux."""

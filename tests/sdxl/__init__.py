"""Tests of models/sdxl."""

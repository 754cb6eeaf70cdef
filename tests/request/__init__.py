"""Tests of models/request."""

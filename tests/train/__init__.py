"""Tests of models/train and train.py."""

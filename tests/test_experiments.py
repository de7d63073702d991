"""Tests for wspatterns.experiments."""

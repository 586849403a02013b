"""Tests of the ensemble package."""

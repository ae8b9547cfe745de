"""Fixtures for the fault suite."""

from tests.azurite_fixtures import azurite, harness

__all__ = ["azurite", "harness"]

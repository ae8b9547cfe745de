"""Fixtures for the storage adapter tests."""

from tests.azurite_fixtures import azurite, harness

__all__ = ["azurite", "harness"]

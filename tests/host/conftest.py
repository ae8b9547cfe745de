"""Fixtures for the runtime-library tests: Azurite and the relay harness for the queue path."""

from tests.azurite_fixtures import azurite, harness

__all__ = ["azurite", "harness"]

"""Moved to tests/support/mqtt.py; these names stay importable from here for the tests that use them."""

from tests.support.mqtt import Collector, Received

__all__ = ["Collector", "Received"]

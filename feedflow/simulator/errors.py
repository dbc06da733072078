"""Errors the simulator raises on purpose."""

from __future__ import annotations

from kernel.errors import FeedflowError


class SimulatorError(FeedflowError):
    """The simulation was asked for something impossible, or failed to produce it."""


class DeliveryError(SimulatorError):
    """The broker did not acknowledge every message."""

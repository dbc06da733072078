"""Synthetic traffic for Feedflow: a catalogue on `media.published`, playback on
`user.engagement.events`, to the broker or a JSONL file (`feedflow simulate`).

Modules, one concept each:

- `vocabulary`: categories and their words, formats, countries, devices (data only).
- `catalogue`: creators, items, `media.published` payloads, the live item pools.
- `tastes`: users' planted tastes and habits, and the ground-truth export.
- `choice`: which item a user plays next and how much they like it.
- `playback`: one user's sessions and views, event by event.
- `clock`: the event-time span, the speedup and pacing.
- `malformed`: bad payloads that the decoders must reject.
- `writers`: the broker, JSONL and in-memory sinks.
- `engine`: the loop that merges everything in event-time order.
- `command`: the `simulate` subcommand.
"""

from feedflow.simulator.engine import SimConfig, Simulation, Summary

__all__ = ["SimConfig", "Simulation", "Summary"]

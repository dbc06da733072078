"""Bytewax dataflows: wiring only. Each module exposes `build_flow(settings) -> Dataflow`."""

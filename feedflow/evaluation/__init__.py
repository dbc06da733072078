"""Offline evaluation: a real interaction data set replayed through the real flows and feed.

`movielens` loads MovieLens and maps it to Feedflow's events, `protocol` holds the
held-out split, the temporal protocol's checkpoints and the metrics, `baselines` the
reference recommenders (MostPop, ItemKNN, EASE, and MostPop over the past only), `replay`
runs the flows and the feed API on a private Redis (after the whole replay, or pausing at
each checkpoint), and `command` is `feedflow eval`. Everything but `replay` and `command` is
pure (no Redis, no Bytewax).
"""

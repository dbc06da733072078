"""Offline evaluation: a real interaction data set replayed through the real flows and feed.

`movielens` loads MovieLens and maps it to Feedflow's events, `protocol` holds the
leave-last-out split and the metrics, `baselines` the reference recommenders (MostPop,
ItemKNN, EASE), `replay` runs the flows and the feed API on a private Redis, and `command`
is `feedflow eval`. Everything but `replay` and `command` is pure (no Redis, no Bytewax).
"""

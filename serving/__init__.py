"""The feed process: HTTP API over features, the index reader and the ranker."""

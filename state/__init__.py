"""Stores behind small interfaces: feature store, vector index with snapshots, registries."""

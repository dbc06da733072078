"""Pure logic the dataflows call: parsing, sessionizing, windows, trending, embeddings.

Nothing in this package imports Bytewax, Redis or Kafka clients, so every piece is testable
in microseconds and portable if the stream engine ever has to change.
"""

"""Packed forms of the item and trending records the engagement flow stores.

msgpack with positional fields: compact in Redis, one decode per value in serving.

Example:
    >>> from operators.trending import TrendingList
    >>> decode_trending(encode_trending(TrendingList(ts=5, items=(("m1", 2.0),)))).items
    (('m1', 2.0),)
"""

from __future__ import annotations

import msgspec

from operators.co_engagement import CoRecord
from operators.item_stats import ItemStatsRecord
from operators.trending import TrendingList

_encoder = msgspec.msgpack.Encoder()
_item_decoder = msgspec.msgpack.Decoder(ItemStatsRecord)
_trending_decoder = msgspec.msgpack.Decoder(TrendingList)
_co_decoder = msgspec.msgpack.Decoder(CoRecord)


def encode_item_stats(record: ItemStatsRecord) -> bytes:
    """Packed item stats."""
    return _encoder.encode(record)


def decode_item_stats(raw: bytes) -> ItemStatsRecord:
    """Item stats from their packed form."""
    return _item_decoder.decode(raw)


def encode_trending(board: TrendingList) -> bytes:
    """A packed trending board."""
    return _encoder.encode(board)


def decode_trending(raw: bytes) -> TrendingList:
    """A trending board from its packed form."""
    return _trending_decoder.decode(raw)


def encode_co_record(record: CoRecord) -> bytes:
    """A packed co-engagement record."""
    return _encoder.encode(record)


def decode_co_record(raw: bytes) -> CoRecord:
    """A co-engagement record from its packed form."""
    return _co_decoder.decode(raw)

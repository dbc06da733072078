"""What Redis keeps about erasures: each flow's acknowledgement and an audit trail, no ids.

- `ff:{erasure}:acks:<request_id>` — hash: flow → the time (ms) it dropped the user's state;
  written by the flows (:class:`flows.redis_sink.FeatureSink`), read by `forget --verify`.
- `ff:{erasure}:audit` — a stream: one entry per request and per verification, naming the
  user only by a keyed digest (:meth:`ErasureLog.digest`), so the trail proves what was done
  for a user someone names again without holding a list of erased ids.
- `ff:{erasure}:key` — the digest's random key, made once per deployment. Without it a
  digest of a guessable id (an e-mail, a sequence number) could be reversed by trying ids.

Acknowledgements and audit entries expire after `retention_days` (default 400: a year of
requests plus slack for an annual review). Keep Redis persistence on where the audit trail
must outlive a Redis restart, or ship the stream elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any, Final

import orjson

from state.redis_client import RedisClient

ACKS_PREFIX: Final = "ff:{erasure}:acks:"
AUDIT_KEY: Final = "ff:{erasure}:audit"
DIGEST_KEY: Final = "ff:{erasure}:key"
RETENTION_DAYS: Final = 400


class ErasureLog:
    """Acknowledgements and audit entries of erasure requests."""

    def __init__(self, client: RedisClient, retention_days: int = RETENTION_DAYS) -> None:
        self.client = client
        self.ttl_s = retention_days * 86_400
        self._key: bytes | None = None

    def ack(self, request_id: str, flow: str, ts_ms: int) -> None:
        """`flow` dropped the state of the request's user at `ts_ms`."""
        key = ACKS_PREFIX + request_id
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, flow, ts_ms)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def acks(self, request_id: str) -> dict[str, int]:
        """Which flows acknowledged `request_id`, and when."""
        raw: dict[bytes, bytes] = self.client.hgetall(ACKS_PREFIX + request_id)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def digest(self, user_id: str) -> str:
        """A keyed digest of a user id (HMAC-SHA256, 128 bits, hex)."""
        if self._key is None:
            self.client.set(DIGEST_KEY, os.urandom(32), nx=True)
            self._key = bytes(self.client.get(DIGEST_KEY) or b"")  # type: ignore[arg-type]
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def audit(self, action: str, user_id: str, request_id: str, detail: dict[str, Any]) -> str:
        """Append one audit entry (the user by digest only); returns its stream id."""
        fields = {
            "action": action,
            "user": self.digest(user_id),
            "request_id": request_id,
            "detail": orjson.dumps(detail),
        }
        # Entries older than the retention go as new ones come (trimmed by id, which is time).
        oldest_ms = int(time.time() * 1000) - self.ttl_s * 1000
        entry = self.client.xadd(AUDIT_KEY, fields, minid=f"{max(oldest_ms, 0)}-0")  # type: ignore[arg-type]
        return entry.decode() if isinstance(entry, bytes) else str(entry)

"""The HTTP protocol serving runs on: uvicorn's h11 protocol, with JSON for unparseable requests.

A request the HTTP parser refuses (a raw NUL byte in the request line, a request line or
headers past h11's size limit, a malformed header) never reaches the app: uvicorn answers 400
itself, with a `text/plain` body. This protocol sends the API's JSON error body instead
(`{"error": "bad_request", "message": …}`), so every 4xx a client can get is JSON.
"""

from __future__ import annotations

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

CODE = "bad_request"


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; its own 400 answers carry a JSON error body."""

    def send_400_response(self, msg: str) -> None:
        """uvicorn: answer an unparseable request with a 400 and a JSON error body, then close."""
        body = orjson.dumps({"error": CODE, "message": f"unparseable request: {msg}"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

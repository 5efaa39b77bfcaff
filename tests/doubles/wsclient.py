"""A small websocket-client wrapper for tests: a reader thread collects every frame."""

from __future__ import annotations

import json
import struct
import threading
import time
from typing import Any, Callable

import websocket


class WsClient:
    """Connects at once; ``messages`` holds ``(type, data)`` for text frames and
    ``("bin<N>", raw_bytes)`` for binary frames (N = the leading big-endian u32)."""

    def __init__(self, url: str, client_id: str | None = None, *, first_message: dict | None = None,
                 header: list[str] | None = None, timeout: float = 10) -> None:
        target = url if client_id is None else f"{url}{'&' if '?' in url else '?'}clientId={client_id}"
        self.ws = websocket.create_connection(target, timeout=timeout, header=header or [])
        if first_message is not None:
            self.ws.send(json.dumps(first_message))
        self.messages: list[tuple[str, Any]] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="ws-client", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                opcode, data = self.ws.recv_data()
            except Exception:  # noqa: BLE001 - closed or dropped
                break
            if opcode == websocket.ABNF.OPCODE_TEXT:
                try:
                    message = json.loads(data.decode())
                    item = (message["type"], message["data"])
                except (ValueError, KeyError, TypeError):
                    item = ("raw", data.decode(errors="replace"))
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                kind = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
                item = (f"bin{kind}" if kind is not None else "bin?", data)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            else:
                continue
            with self._cond:
                self.messages.append(item)
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float = 10) -> list:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.messages), timeout):
                raise AssertionError(f"timed out; got {[m[0] for m in self.messages]}")
            return list(self.messages)

    def wait_message(self, kind: str, timeout: float = 10, **fields: Any) -> Any:
        """Wait for a message of ``kind`` whose data contains ``fields``; returns its data."""
        def match(item):
            return item[0] == kind and all(isinstance(item[1], dict) and item[1].get(k) == v for k, v in fields.items())
        found = self.wait_for(lambda msgs: any(match(m) for m in msgs), timeout)
        return next(m[1] for m in found if match(m))

    def wait_closed(self, timeout: float = 10) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed, timeout):
                raise AssertionError("socket still open")

    def settle(self, count: int, timeout: float = 10, quiet: float = 0.05) -> list[tuple[str, Any]]:
        """Wait for at least ``count`` messages, then ``quiet`` seconds; return everything received."""
        self.wait_for(lambda msgs: len(msgs) >= count, timeout)
        time.sleep(quiet)
        with self._cond:
            return list(self.messages)

    def types(self) -> list[str]:
        with self._cond:
            return [m[0] for m in self.messages]

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self._thread.join(2)

    def __enter__(self) -> "WsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The least an asyncio relay does per request: the gateway's CPU floor, measured beside it.

    python bench/relay_floor.py PORT unix:/path/to/instance/server.sock

On the gateway's stack (uvloop where it is installed, else asyncio's own loop) and with its
connection scheme to the instance (a connection its worker keeps where one is idle, else a new
one), it reads each request whole by its Content-Length, passes its bytes on unchanged, and
passes the answer back with only the instance's Connection header dropped (the client's
connection is kept whatever the instance's hop does). No key, no routing, no request id, no
timeout, no access line, no metrics, no chunked bodies, no pipelining: none of what the gateway
is for, so its CPU per request is what a Python gateway cannot go below on this machine. Written
by hand because the point is to have nothing else in it; bench/gateway.py starts it.
"""
import asyncio
import re
import sys
from typing import List, Optional

_HEAD_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CONNECTION = re.compile(rb"\r\nconnection:[^\r]*", re.IGNORECASE)


class _Message:
    """Bytes of one HTTP/1.1 message as they come: whole once its head and Content-Length are.
    A message that comes in one read is passed on as that read's bytes, never copied."""

    def __init__(self) -> None:
        self.data = b""
        self.size: Optional[int] = None
        self.head = b""

    def feed(self, data: bytes) -> bool:
        self.data = self.data + data if self.data else data
        if self.size is None:
            end = self.data.find(_HEAD_END)
            if end < 0:
                return False
            self.head = self.data[:end]
            length = _LENGTH.search(self.head)
            self.size = end + 4 + (int(length.group(1)) if length else 0)
        return len(self.data) >= self.size

    def take(self) -> bytes:
        data, size = self.data, self.size
        self.data, self.size, self.head = b"", None, b""
        if len(data) == size:
            return data
        if data[size:]:
            self.feed(data[size:])
        return data[:size]


class _Upstream(asyncio.Protocol):
    def __init__(self, idle: List["_Upstream"]):
        self.idle, self.answer = idle, _Message()
        self.client: Optional["_Client"] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.answer.feed(data):
            return
        closes = b"connection: close" in self.answer.head.lower()
        whole = self.answer.take()
        end = whole.find(_HEAD_END)
        client, self.client = self.client, None
        if closes:
            self.transport.close()
        else:
            self.idle.append(self)
        if not client.transport.is_closing():  # a client gone with its request in flight
            client.transport.writelines((_CONNECTION.sub(b"", whole[:end]),
                                         memoryview(whole)[end:]))

    def connection_lost(self, exc) -> None:
        if self in self.idle:
            self.idle.remove(self)


class _Client(asyncio.Protocol):
    def __init__(self, path: str, idle: List[_Upstream]):
        self.path, self.idle, self.request = path, idle, _Message()
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.request.feed(data):
            whole = self.request.take()
            while self.idle:
                upstream = self.idle.pop()
                if not upstream.transport.is_closing():
                    upstream.client = self
                    upstream.transport.write(whole)
                    return
            asyncio.get_running_loop().create_task(self._connect(whole))

    async def _connect(self, whole: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_unix_connection(lambda: _Upstream(self.idle), self.path)
        upstream.client = self
        upstream.transport.write(whole)


async def serve(port: int, address: str) -> None:
    path = address[len("unix:"):] if address.startswith("unix:") else address
    idle: List[_Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(path, idle), "127.0.0.1", port,
                                      reuse_address=True)
    print("relay floor listening on 127.0.0.1:{}".format(port), flush=True)
    await server.serve_forever()


def main() -> None:
    port, address = int(sys.argv[1]), sys.argv[2]
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, address))
    else:
        uvloop.run(serve(port, address))


if __name__ == "__main__":
    main()

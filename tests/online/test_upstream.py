"""upstream.py, the gateway's hop to an instance, against real servers: a Unix socket deeper than a
socket address holds, a chunked answer, and a refused connection."""
import asyncio
import os

import pytest

from mlflow_deploy.online import upstream

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n" \
         b"Connection: close\r\n\r\n3\r\n[1.\r\n2\r\n0]\r\n0\r\n\r\n"


async def answer_once(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length")][0])
    await reader.readexactly(length)
    writer.write(ANSWER)
    await writer.drain()
    writer.close()


def test_a_socket_path_longer_than_an_address_holds(tmp_path):
    folder = tmp_path / ("deep" * 20)
    folder.mkdir()
    path = folder / "server.sock"
    assert len(str(path).encode()) > 108

    async def scenario():
        # bound through the folder, as gunicorn binds a path relative to its own folder
        fd = os.open(str(folder), os.O_PATH | os.O_DIRECTORY)
        try:
            server = await asyncio.start_unix_server(answer_once,
                                                     f"/proc/self/fd/{fd}/server.sock")
        finally:
            os.close(fd)
        async with server:
            return await upstream.exchange(f"unix:{path}", "POST", "/score",
                                           {"Content-Type": "application/json"}, b"{}")

    status, headers, body = asyncio.run(scenario())
    assert status == 200 and body == b"[1.0]"
    assert ("Content-Type", "application/json") in headers


def test_a_socket_nobody_listens_on_is_unreachable(tmp_path):
    with pytest.raises(upstream.Unreachable):
        asyncio.run(upstream.exchange(f"unix:{tmp_path / 'gone.sock'}", "GET", "/", {}, b""))

"""The scoring worker's body reader (``worker.SocketBody``), on gunicorn's own request parser over
a real socket pair: the body whole and exact however it arrives, the next request's bytes left to
the parser, a client that leaves mid-body a short read (as gunicorn's reader gives), and a
chunked body left to gunicorn's reader."""
import socket
import threading

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from werkzeug.wsgi import get_input_stream

from mlflow_deploy.scoring.worker import SocketBody, socket_body

NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


def head(length: int) -> bytes:
    return (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.settimeout(10)  # a read past what was sent fails the test, never hangs it
    yield server, client
    server.close()
    client.close()


def send_in_pieces(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    """Send ``data`` ``piece`` bytes a call, from a thread (the reader may be waiting)."""
    def run():
        for start in range(0, len(data), piece):
            sock.sendall(data[start:start + piece])
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def read_as_the_app_does(body) -> bytes:
    """As the scoring app reads a body: through werkzeug's stream, 64 KB a call."""
    stream = get_input_stream({"wsgi.input": body, "wsgi.input_terminated": True})
    pieces = []
    while True:
        piece = stream.read(1 << 16)
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)


@pytest.mark.parametrize("length,piece", [
    (0, 1024),
    (300, 1 << 20),          # the body and the next request in gunicorn's first read
    (110_879, 1 << 20),      # a 1000-row payload of the benchmark's
    (200_000, 997),          # trickled, in pieces that align with nothing
])
def test_the_body_is_read_whole_and_exact_and_the_next_request_is_left_to_the_parser(
        pair, length, piece):
    server, client = pair
    body = bytes(range(256)) * (length // 256) + b"z" * (length % 256)
    sender = send_in_pieces(client, head(length) + body + NEXT, piece)
    parser = RequestParser(Config(), server, ("127.0.0.1", 1))
    request = next(parser)
    request.body = socket_body(request, server)
    assert isinstance(request.body, SocketBody)
    assert read_as_the_app_does(request.body) == body
    assert request.body.read() == b""
    following = next(parser)
    assert (following.method, following.path) == ("GET", "/next")
    sender.join()


def test_read_sizes_and_lines_hand_out_the_body_in_order(pair):
    server, client = pair
    body = b"first line\nsecond line\n" + b"x" * 20_000
    sender = send_in_pieces(client, head(len(body)) + body, 4096)
    request = next(RequestParser(Config(), server, ("127.0.0.1", 1)))
    reader = socket_body(request, server)
    assert reader.readline() == b"first line\n"
    assert reader.read(7) == b"second "
    buffer = bytearray(5)
    assert reader.readinto(buffer) == 5 and bytes(buffer) == b"line\n"
    assert reader.read() == b"x" * 20_000
    sender.join()


def test_a_client_that_leaves_mid_body_gives_a_short_read_not_a_hang(pair):
    server, client = pair
    client.sendall(head(50_000) + b"{" * 12_000)
    client.shutdown(socket.SHUT_WR)
    request = next(RequestParser(Config(), server, ("127.0.0.1", 1)))
    reader = socket_body(request, server)
    assert reader.read() == b"{" * 12_000
    assert reader.read(10) == b""


def test_a_chunked_body_keeps_gunicorns_reader(pair):
    server, client = pair
    client.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n")
    request = next(RequestParser(Config(), server, ("127.0.0.1", 1)))
    assert socket_body(request, server) is None
    assert request.body.read() == b"hello"

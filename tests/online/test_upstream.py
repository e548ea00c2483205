"""upstream.py, the gateway's hop to an instance, against real servers: a Unix socket deeper than a
socket address holds, a chunked answer, an answer complete by its framing while the server keeps
the connection open, a refused connection, an answer cut short and a timeout."""
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


@pytest.mark.parametrize("method,answer,body", [
    ("POST", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n[1.0]",
     b"[1.0]"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", b""),
    ("POST", b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", b""),
])
def test_the_gateway_half_closes_after_its_request_and_takes_the_answer_by_its_framing(
        tmp_path, method, answer, body):
    """A gunicorn sync worker, its answer written, waits for the gateway's end of stream before
    it takes its next request: the gateway sends it right after the request, and takes the
    answer as complete by its framing, never waiting for the instance to close (this one keeps
    the connection open until the test ends)."""
    path = str(tmp_path / "server.sock")
    release = asyncio.Event()
    after_request = []

    async def holds_the_connection(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        after_request.append(await reader.read())  # to the gateway's end of stream
        writer.write(answer)
        await writer.drain()
        await release.wait()
        writer.close()

    async def scenario():
        server = await asyncio.start_unix_server(holds_the_connection, path)
        async with server:
            try:
                return await asyncio.wait_for(
                    upstream.exchange(f"unix:{path}", method, "/score", {}, b"{}"), 10)
            finally:
                release.set()

    status, _, got = asyncio.run(scenario())
    assert (status, got) == (int(answer.split(b" ")[1]), body)
    assert after_request == [b""]


def test_a_socket_nobody_listens_on_is_unreachable(tmp_path):
    with pytest.raises(upstream.Unreachable):
        asyncio.run(upstream.exchange(f"unix:{tmp_path / 'gone.sock'}", "GET", "/", {}, b""))


def test_an_answer_cut_short_is_a_connection_error_and_a_timeout_closes_the_connection(tmp_path):
    """The instance closing in the middle of its body, or framing it in chunks that are not, is
    an error, never a short body taken for the answer (nor an exchange left waiting); an
    exchange cancelled by the gateway's timeout closes its connection at once
    (the instance's late answer finds nobody to read it) and leaves no error for nobody to
    retrieve."""
    path = str(tmp_path / "server.sock")
    seen_end = []
    timed_out, ended = asyncio.Event(), asyncio.Event()

    async def cut_short(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1.")
        await writer.drain()
        writer.close()

    async def misframed(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[1.\r\n")
        await writer.drain()
        writer.close()

    async def answers_too_late(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        seen_end.append(await reader.read() == b"{}")  # the body, then the end of the stream
        await timed_out.wait()
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except ConnectionError:  # the gateway's side is closed
            ended.set()
        writer.close()

    async def scenario():
        loop = asyncio.get_running_loop()
        unretrieved = []
        loop.set_exception_handler(lambda _, context: unretrieved.append(context))
        for broken, error in ((cut_short, ConnectionError), (misframed, ValueError)):
            server = await asyncio.start_unix_server(broken, path)
            async with server:
                with pytest.raises(error):
                    await asyncio.wait_for(
                        upstream.exchange(f"unix:{path}", "POST", "/score", {}, b"{}"), 10)
            os.unlink(path)
        server = await asyncio.start_unix_server(answers_too_late, path)
        async with server:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    upstream.exchange(f"unix:{path}", "POST", "/score", {}, b"{}"), 0.3)
            timed_out.set()
            await asyncio.wait_for(ended.wait(), 5)  # the instance's side sees the close
        import gc
        gc.collect()
        await asyncio.sleep(0)
        return unretrieved

    unretrieved = asyncio.run(scenario())
    assert seen_end == [True]
    assert unretrieved == []


class KeepingServer:
    """An instance's socket as its workers keep connections: every request answered with
    keep-alive (its body the number of the connection it came on), until the test says the
    next request is to find its connection closed unread, as a worker that stops leaves it, or
    that the answers are held."""

    def __init__(self):
        self.connections = 0
        self.drop_next = False
        self.closing = False  # answers say Connection: close, as to a worker's second connection
        self.hold = asyncio.Event()
        self.hold.set()

    async def serve(self, reader, writer):
        self.connections += 1
        number = self.connections
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            if self.drop_next:  # closed with the request unread
                self.drop_next = False
                break
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            await reader.readexactly(length)
            await self.hold.wait()
            answer = str(number).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
                len(answer), b"Connection: close\r\n" if self.closing else b"", answer))
            await writer.drain()
            if self.closing:
                break
        writer.close()


def pool_scenario(tmp_path, scenario):
    """Run ``scenario(pool, instance)`` against a KeepingServer on a Unix socket."""
    path = str(tmp_path / "server.sock")
    instance = KeepingServer()

    async def run():
        server = await asyncio.start_unix_server(instance.serve, path)
        async with server:
            return await asyncio.wait_for(scenario(upstream.Pool(f"unix:{path}"), instance), 20)

    return asyncio.run(run())


def bodies(answers):
    return [body for status, _, body in answers if status == 200]


def test_a_pool_sends_each_request_on_a_kept_connection_where_one_is_idle(tmp_path):
    """Requests one after another share one connection; three at once take three, which the
    next requests share; a kept connection closed unread (its worker stopped) has its request
    sent again on a new one, which is kept in its place."""
    async def scenario(pool, instance):
        one_by_one = [await pool.exchange("POST", "/score", {}, b"{}") for _ in range(3)]
        instance.hold.clear()
        at_once = [asyncio.ensure_future(pool.exchange("POST", "/score", {}, b"{}"))
                   for _ in range(3)]
        while instance.connections < 3:
            await asyncio.sleep(0.01)
        instance.hold.set()
        at_once = await asyncio.gather(*at_once)
        after = [await pool.exchange("POST", "/score", {}, b"{}") for _ in range(2)]
        instance.drop_next = True
        dropped = await pool.exchange("POST", "/score", {}, b"{}")
        return one_by_one, at_once, after, dropped, len(pool.idle)

    one_by_one, at_once, after, dropped, idle = pool_scenario(tmp_path, scenario)
    assert bodies(one_by_one) == [b"1"] * 3
    assert sorted(bodies(at_once)) == [b"1", b"2", b"3"]
    assert len(bodies(after)) == 2 and set(bodies(after)) <= {b"1", b"2", b"3"}
    assert bodies([dropped]) == [b"4"] and idle == 3


def test_an_answer_that_says_close_leaves_no_connection_to_keep(tmp_path):
    async def scenario(pool, instance):
        instance.closing = True
        answers = [await pool.exchange("POST", "/score", {}, b"{}") for _ in range(2)]
        return answers, len(pool.idle)

    answers, idle = pool_scenario(tmp_path, scenario)
    assert bodies(answers) == [b"1", b"2"] and idle == 0


def test_a_timed_out_request_closes_its_kept_connection(tmp_path):
    """The instance's answer that comes after the timeout must never be taken for the next
    request's: the connection it would come on is closed, and the next request gets a new one."""
    async def scenario(pool, instance):
        first = await pool.exchange("POST", "/score", {}, b"{}")
        instance.hold.clear()
        with pytest.raises(upstream.TimedOut):
            await pool.exchange("POST", "/score", {}, b"{}", timeout_s=0.2)
        instance.hold.set()
        return first, await pool.exchange("POST", "/score", {}, b"{}", timeout_s=5)

    first, second = pool_scenario(tmp_path, scenario)
    assert bodies([first, second]) == [b"1", b"2"]


def test_a_new_connection_closed_unanswered_is_an_error_not_sent_again(tmp_path):
    """Only a kept connection's close sends a request again: on a new connection it means the
    instance failed on it (the gateway answers 502)."""
    async def scenario(pool, instance):
        instance.drop_next = True
        with pytest.raises(ConnectionError):
            await pool.exchange("POST", "/score", {}, b"{}")
        return instance.connections

    assert pool_scenario(tmp_path, scenario) == 1

"""The overload benchmark's open-loop client sorts every answer as the figures need:
served (200), shed (503 with Retry-After), and each other outcome counted by name,
against a scripted HTTP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from bench import overload

BODY = b'{"instances": []}'
# What the server does with each request, in arrival order.
SCRIPT = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}",  # no Retry-After
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"close",
    b"hang",
    # The head and body in two pieces, after a previous answer on the same connection.
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[0.5",
]


async def scripted_server(answered: list[bytes]) -> asyncio.Server:
    order = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Until the client gives up on this connection.
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await answer_each(reader, writer)

    async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == BODY
            answer = SCRIPT[next(order)]
            answered.append(answer)
            if answer == b"close":
                writer.close()
                return
            if answer == b"hang":
                continue
            writer.write(answer)
            if answer.endswith(b"[0.5"):
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(b"]")

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_every_answer_is_sorted_and_a_silent_server_times_out() -> None:
    async def main() -> overload.Arrivals:
        answered: list[bytes] = []
        server = await scripted_server(answered)
        port = server.sockets[0].getsockname()[1]
        arrivals = overload.Arrivals("127.0.0.1", port, BODY, timeout=0.5)
        for _ in SCRIPT:
            arrivals.arrive()
            await asyncio.sleep(0.1)  # one at a time, so the script's order holds
        await asyncio.wait_for(arrivals.all_answered.wait(), 5)
        arrivals.close()
        server.close()
        assert answered == SCRIPT
        return arrivals

    arrivals = asyncio.run(main())
    assert len(arrivals.served) == 2
    assert len(arrivals.shed) == 1
    assert arrivals.failures == {
        "503": 1,
        "500": 1,
        "UnreadableAnswer": 1,
        "ServerDisconnected": 1,
        "TimeoutError": 1,
    }
    assert arrivals.waiting == 0
    # The second answer in two pieces waited for its last byte.
    assert max(arrivals.served) >= 0.05


def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server may be closing it (uvicorn's keep-alive timeout): a request sent as
    it closes would be counted as a failure of the server under test."""
    monkeypatch.setattr(overload, "IDLE_REUSE_S", 0.2)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"

    async def main() -> tuple[int, overload.Arrivals]:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await reader.readexactly(len(BODY))
                    writer.write(answer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        arrivals = overload.Arrivals("127.0.0.1", server.sockets[0].getsockname()[1], BODY)
        for pause in (0.05, 0.05, 0.3, 0.05):  # reused, reused, new, reused
            arrivals.arrive()
            await asyncio.sleep(pause)
        await asyncio.wait_for(arrivals.all_answered.wait(), 5)
        arrivals.close()
        server.close()
        return connections, arrivals

    connections, arrivals = asyncio.run(main())
    assert len(arrivals.served) == 4 and not arrivals.failures
    assert connections == 2

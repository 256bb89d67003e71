"""An HTTP/1.1 transport for streamed LLM answers: the body arrives as the network delivers it.

httpx parses a chunked body one HTTP chunk (one vLLM token) at a time, in Python; this reads the
socket in network-sized pieces and strips the framing with bytes operations. It takes the LLM
client's chat requests (STREAM_EXTENSION) over plain http://, HTTP/1.1, keep-alive; the rest (and
all of it under an environment proxy) goes to the httpx transport it wraps. Failures are httpx's
exceptions; closing a response early closes the connection (vLLM aborts the generation).
"""

from __future__ import annotations

import select
import socket
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import httpx

STREAM_EXTENSION = "kbqa.sse"  # set on a request's extensions to take this transport's path
READ_SIZE = 65536
MAX_HEAD_BYTES = 65536
MAX_CHUNK_LINE = 1024


class StreamTransport(httpx.AsyncBaseTransport):
    """Takes STREAM_EXTENSION requests over plain http://; everything else goes to `fallback`.

    Kept over aiohttp (issue 15; bench/stream_relay.py --compare and --calls 1000; 2 shared
    cores): aiohttp under the same httpx API relays 0.89-1.07x the tokens/s (median 0.97) with
    1-8 ms more added TTFT in every run (6 runs x 30 rounds), and takes 1.08-1.14x as long per
    whole + streamed call (6 runs x 1000 rounds, 100 tokens); plain httpx: 0.11-0.14x,
    2.0-2.5x. See bench/REPORT.md.
    """

    def __init__(self, fallback: httpx.AsyncBaseTransport, *, max_idle: int = 100) -> None:
        self._fallback = fallback
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int], list[anyio.abc.SocketStream]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http" or not request.extensions.get(STREAM_EXTENSION):
            return await self._fallback.handle_async_request(request)
        host, port = request.url.host, request.url.port or 80
        timeouts = request.extensions.get("timeout", {})
        message = _head(request) + await request.aread()
        while True:
            stream, reused = await self._idle_connection((host, port)), True
            if stream is None:
                stream, reused = await _connect(request, host, port, timeouts.get("connect")), False
            reader = _Reader(stream, request, timeouts.get("read"))
            try:
                await _send(stream, message, request, timeouts.get("write"))
                status, reason, headers = await reader.head()
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                await _close(stream)
                if reused and not reader.received:
                    continue  # the server had closed the idle connection: a fresh one
                raise
            except BaseException:
                await _close(stream)
                raise
            break
        body = _Body(self, (host, port), reader, headers, no_body=_no_body(request, status))
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def _idle_connection(self, key: tuple[str, int]) -> anyio.abc.SocketStream | None:
        pool = self._idle.get(key)
        while pool:
            stream = pool.pop()
            if not _readable(stream):  # an idle connection has nothing to say unless closed
                return stream
            await _close(stream)
        return None

    async def _release(self, key: tuple[str, int], stream: anyio.abc.SocketStream) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < self._max_idle:
            pool.append(stream)
        else:
            await _close(stream)

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for stream in pool:
                await _close(stream)
        self._idle.clear()
        await self._fallback.aclose()


def _readable(stream: anyio.abc.SocketStream) -> bool:
    fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
    if hasattr(select, "poll"):  # poll: select() cannot watch descriptors above 1023
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _head(request: httpx.Request) -> bytes:
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), target)]
    lines += [b"%s: %s" % (k, v) for k, v in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(
    request: httpx.Request, host: str, port: int, timeout: float | None
) -> anyio.abc.SocketStream:
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(host, port)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(
            f"connecting to {host}:{port} timed out", request=request
        ) from exc
    except OSError as exc:
        raise httpx.ConnectError(f"{host}:{port}: {exc}", request=request) from exc
    stream.extra(anyio.abc.SocketAttribute.raw_socket).setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    return stream


async def _send(
    stream: anyio.abc.SocketStream, message: bytes, request: httpx.Request, timeout: float | None
) -> None:
    try:
        with anyio.fail_after(timeout):
            await stream.send(message)
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise httpx.WriteError(f"sending the request failed: {exc!r}", request=request) from exc


async def _close(stream: anyio.abc.SocketStream) -> None:
    # Shielded: a cancelled request (the client went away) must still close its connection.
    with anyio.CancelScope(shield=True):
        await stream.aclose()


def _no_body(request: httpx.Request, status: int) -> bool:
    return request.method == "HEAD" or status in (204, 304)


class _Reader:
    """A socket with a read buffer; every read is bounded by the read timeout."""

    def __init__(
        self, stream: anyio.abc.SocketStream, request: httpx.Request, timeout: float | None
    ) -> None:
        self.stream = stream
        self.buffer = b""
        self.received = False  # any byte at all: a failure after that is not a stale connection
        self._request = request
        self._timeout = timeout

    async def read(self) -> bytes:
        """The next bytes from the network; b"" when the server closed the connection."""
        try:
            with anyio.fail_after(self._timeout):
                data = await self.stream.receive(READ_SIZE)
        except anyio.EndOfStream:
            return b""
        except TimeoutError as exc:
            raise httpx.ReadTimeout("the server sent nothing in time", request=self._request) from (
                exc
            )
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.ReadError(f"reading failed: {exc!r}", request=self._request) from exc
        self.received = True
        return data

    async def head(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise self.error("response head too long")
            data = await self.read()
            if not data:
                raise self.error("the server closed the connection without a response")
            self.buffer += data
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise self.error(f"not an HTTP/1.x response: {status_line[:80]!r}")
        headers = []
        for line in header_lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise self.error(f"malformed header line: {line[:80]!r}")
            headers.append((name, value.strip()))
        status = int(parts[1])
        if 100 <= status < 200:  # an interim response (100 Continue): the real one follows
            return await self.head()
        return status, parts[2] if len(parts) > 2 else b"", headers

    def error(self, message: str) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(message, request=self._request)


class _Body(httpx.AsyncByteStream):
    """The response body in network-sized pieces: chunked, with a length, or up to the close."""

    def __init__(
        self,
        transport: StreamTransport,
        key: tuple[str, int],
        reader: _Reader,
        headers: list[tuple[bytes, bytes]],
        *,
        no_body: bool,
    ) -> None:
        self._transport = transport
        self._key = key
        self._reader = reader
        self._open = True
        values = {k.lower(): v.lower() for k, v in headers}
        self._chunked = b"chunked" in values.get(b"transfer-encoding", b"")
        length = values.get(b"content-length", b"")
        self._length = int(length) if length.isdigit() and not self._chunked else None
        self._keep_alive = b"close" not in values.get(b"connection", b"") and (
            self._chunked or self._length is not None
        )
        if no_body:
            self._chunked, self._length = False, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunked:
            pieces = self._dechunked()
        elif self._length is not None:
            pieces = self._counted(self._length)
        else:
            pieces = self._until_close()
        async for piece in pieces:
            yield piece
        # The whole body is read: the connection can carry the next request.
        self._open = False
        if self._keep_alive and not self._reader.buffer:
            await self._transport._release(self._key, self._reader.stream)
        else:
            await _close(self._reader.stream)

    async def _counted(self, left: int) -> AsyncIterator[bytes]:
        reader = self._reader
        while left > 0:
            data, reader.buffer = reader.buffer, b""
            if not data:
                data = await reader.read()
                if not data:
                    raise reader.error(f"the body ended {left} bytes short")
            piece, reader.buffer = data[:left], data[left:]
            left -= len(piece)
            yield piece

    async def _until_close(self) -> AsyncIterator[bytes]:
        reader = self._reader
        data, reader.buffer = reader.buffer, b""
        while data:
            yield data
            data = await reader.read()

    async def _dechunked(self) -> AsyncIterator[bytes]:
        """Chunked transfer coding undone with bytes operations, once per network read."""
        reader = self._reader
        buf, reader.buffer = reader.buffer, b""
        pos = 0
        left = 0  # data bytes of the current chunk still to come
        crlf = False  # the CRLF after a chunk's data is still to come
        while True:
            pieces = []
            while True:
                if left:
                    take = buf[pos : pos + left]
                    if not take:
                        break
                    pieces.append(take)
                    pos += len(take)
                    left -= len(take)
                    if left:
                        break
                    crlf = True
                if crlf:
                    if len(buf) - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise reader.error("chunk data not followed by CRLF")
                    pos += 2
                    crlf = False
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_CHUNK_LINE:
                        raise reader.error("chunk size line too long")
                    break
                size_text = buf[pos:end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise reader.error(f"bad chunk size {size_text[:20]!r}") from None
                pos = end + 2
                if size == 0:
                    if pieces:
                        yield b"".join(pieces)
                    await self._trailers(buf[pos:])
                    return
                left = size
            if pieces:
                yield b"".join(pieces)
            data = await reader.read()
            if not data:
                raise reader.error("the server closed the connection inside a chunked body")
            buf = buf[pos:] + data
            pos = 0

    async def _trailers(self, buf: bytes) -> None:
        """Skip trailer fields up to the empty line that ends the message."""
        reader = self._reader
        while True:
            if buf.startswith(b"\r\n"):
                reader.buffer = buf[2:]
                return
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                reader.buffer = buf[end + 4 :]
                return
            if len(buf) > MAX_HEAD_BYTES:
                raise reader.error("trailers too long")
            data = await reader.read()
            if not data:
                raise reader.error("the server closed the connection inside the trailers")
            buf += data

    async def aclose(self) -> None:
        if self._open:  # closed before its end: the server sees the connection go
            self._open = False
            await _close(self._reader.stream)

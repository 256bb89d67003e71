"""A minimal OpenAI-compatible upstream for benchmarks: streams N tokens as fast as it can.

Raw asyncio HTTP/1.1 with keep-alive and chunked encoding, so the server itself costs as little
as possible per token: every token is its own SSE event and its own socket write, the way vLLM
emits them. `python bench/fake_openai.py --port 8900 --tokens 2000`.

The tokens are distinct three-letter words ("qzf "), 4 bytes each, in a fixed shuffled order
that repeats only after 17,576 of them: an answer of "tok tok tok ..." is runaway repetition,
which the service now stops (rag/qa/degenerate.py), so it would measure a cut-short answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import string
import time
from typing import Any

WORDS = ["".join(w) + " " for w in itertools.product(string.ascii_lowercase, repeat=3)]
random.Random(0).shuffle(WORDS)


def answer(tokens: int) -> str:
    """The text of an answer of `tokens` tokens, as this upstream sends it."""
    return "".join(WORDS[i % len(WORDS)] for i in range(tokens))


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return _frame(f"data: {text}\n\n".encode())


class FakeOpenAI:
    def __init__(self, tokens: int, pace: float = 0.0) -> None:
        self.tokens = tokens
        self.pace = pace  # tokens per second; 0: as fast as it can
        # One pre-encoded event per distinct word: the server does no work per token but write.
        self.token_events = [
            _event(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "model": "fake",
                    "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
                }
            )
            for w in WORDS[: min(tokens, len(WORDS))]
        ]
        last = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "model": "fake",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1},
        }
        self.tail = _event(last) + _event("[DONE]") + b"0\r\n\r\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                path = head[0].split(" ")[1]
                headers = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (h.split(":", 1) for h in head[1:] if h)
                )
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if path.endswith("/chat/completions") and json.loads(body).get("stream"):
                    await self.stream(writer)
                elif path.endswith("/chat/completions"):
                    self.send_json(writer, self.completion())
                elif path.endswith("/models"):
                    self.send_json(writer, {"object": "list", "data": [{"id": "fake"}]})
                else:
                    self.send_json(writer, {"error": "not found"}, "404 Not Found")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        events = self.token_events
        started = time.perf_counter()
        for i in range(self.tokens):
            # One write per token: a send() each while the socket keeps up.
            writer.write(events[i % len(events)])
            await writer.drain()
            if self.pace:  # like a real model: token i+1 is due at (i+1)/pace seconds
                await asyncio.sleep(max(0.0, started + (i + 1) / self.pace - time.perf_counter()))
        writer.write(self.tail)

    def completion(self) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": "fake",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer(self.tokens)}}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": self.tokens},
        }

    @staticmethod
    def send_json(writer: asyncio.StreamWriter, data: object, status: str = "200 OK") -> None:
        body = json.dumps(data).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )


async def serve(port: int, tokens: int, pace: float = 0.0) -> None:
    fake = FakeOpenAI(tokens, pace)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port)
    print(f"fake upstream on http://127.0.0.1:{port}/v1 streaming {tokens} tokens", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--pace", type=float, default=0.0, help="tokens/s (0: as fast as it can)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.tokens, args.pace))


if __name__ == "__main__":
    main()

"""The c=1 floor: the least any Python HTTP server does around one forward pass, to set beside smls's c=1 cell.

    .venv/bin/python -m bench.bare_server --port 8123 --backend onnx-int8

Nothing here is a server anyone should run. It reads HTTP/1.1 requests with a
Content-Length off a kept-alive connection (blocking, one thread per connection), takes
`message` from a JSON body, runs the same encoder as the in-process one-thread p50 of
`make bench` (bench.inprocess.encoder: one stream of one thread) on it, and writes the vectors
with orjson: no routing, no checks, no options, no metrics, no batching. Its c=1 p50
over the in-process p50 is what this machine's loopback, scheduler and wake-ups add to a
pass; smls's c=1 p50 over the bare server's, measured beside it, is what smls's own
code adds (bench.rounds prints both).
"""

from __future__ import annotations

import argparse
import socket
import threading

import orjson

from bench.inprocess import encoder
from smls.encoders.base import Encoder

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def serve(sock: socket.socket, enc: Encoder) -> None:
    """Answer requests on one connection until the client closes it (or sends something this server does not read)."""
    buf = b""
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    return
                if not data:
                    return
                buf += data
                continue
            length = _content_length(buf[:end])
            if length is None:
                sock.sendall(_BAD)
                return
            while len(buf) < end + 4 + length:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            method, body, buf = buf[:4], buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
            out = _answer(enc, body) if method == b"POST" else b'"ok"'
            if out is None:
                sock.sendall(_BAD)
                return
            sock.sendall(_OK % len(out) + out)


def _content_length(head: bytes) -> int | None:
    """The head's Content-Length (0 if it has none); None if it is not a number."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return 0


def _answer(enc: Encoder, body: bytes) -> bytes | None:
    """{"embeddings": [...]} for a body {"message": "text" or ["text", ...]}; None for any other body."""
    try:
        message = orjson.loads(body)["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    texts = [message] if isinstance(message, str) else message
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return None
    return orjson.dumps({"embeddings": enc.run(texts)}, option=orjson.OPT_SERIALIZE_NUMPY)


def main() -> None:
    """Load the encoder, then answer every connection in a thread of its own."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", default="onnx-int8")
    args = parser.parse_args()
    enc = encoder(args.backend, 1, 1)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=64)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock, enc), daemon=True).start()


if __name__ == "__main__":
    main()

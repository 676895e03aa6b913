"""The floor for Python msgpack-RPC: a bare trio server that answers every request with its params.

    python -m bench.echo_server SOCKET_PATH

Same transport as the daemon (a Unix stream socket), same framing and the same msgpack
settings, and nothing else: no session states, no method table, no validation. It answers
`hello` too (with the params it got), so the real browserd client runs against it unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import msgpack
import trio

RECEIVE_SIZE = 256 * 1024  # as the daemon's rpc_server


async def serve_connection(stream: trio.SocketStream) -> None:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=16 * 1024 * 1024)
    packer = msgpack.Packer(use_bin_type=True)
    async with stream:
        while True:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            unpacker.feed(data)
            replies = [
                packer.pack([1, message[1], None, message[3][0] if message[3] else {}])
                for message in unpacker
            ]
            try:
                await stream.send_all(b"".join(replies))
            except trio.BrokenResourceError:
                return


async def main(path: Path) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(128)
    listeners = [trio.SocketListener(sock)]
    await trio.serve_listeners(serve_connection, listeners)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.echo_server SOCKET_PATH")
    os.umask(0o077)
    Path(sys.argv[1]).unlink(missing_ok=True)
    trio.run(main, Path(sys.argv[1]))

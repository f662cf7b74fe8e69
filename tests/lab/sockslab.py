"""A tiny SOCKS5 proxy (RFC 1928, CONNECT, no authentication) on loopback, for proxy tests.

It records every CONNECT target so tests can see that traffic really went through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from types import TracebackType


class Socks5Server:
    """``async with Socks5Server() as proxy: proxy.url`` -> ``socks5://127.0.0.1:<port>``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.connects: list[tuple[str, int]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"socks5://{self.host}:{self.port}"

    async def __aenter__(self) -> Socks5Server:
        self._server = await asyncio.start_server(self._client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            version, count = await reader.readexactly(2)
            methods = await reader.readexactly(count)
            if version != 5 or 0 not in methods:
                writer.write(b"\x05\xff")
                return
            writer.write(b"\x05\x00")
            _, command, _, atyp = await reader.readexactly(4)
            if atyp == 1:
                host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
            elif atyp == 4:
                host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
            else:
                (length,) = await reader.readexactly(1)
                host = (await reader.readexactly(length)).decode("idna")
            (port,) = struct.unpack("!H", await reader.readexactly(2))
            self.connects.append((host, port))
            try:
                if command != 1:
                    raise OSError("only CONNECT")
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.write(b"\x05\x05\x00\x01" + bytes(6))  # connection refused
                return
            writer.write(b"\x05\x00\x00\x01" + bytes(6))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()

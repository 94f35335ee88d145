"""Shared MTP sockets: NODELAY, TLS with handshake failures as events, UDS."""

from __future__ import annotations

import asyncio
import socket

import pytest

from conformance.mtp import pki
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Server, open_connection, open_unix_connection

CTRL, AGENT = "proto::controller-1", "os::012345-ABC"
STEP = 5.0


@pytest.fixture(scope="module")
def creds():
    ca = pki.make_ca("transport test CA")
    other = pki.make_ca("other CA")
    return {
        "ca": ca,
        "server": pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"]),
        "client": pki.issue(ca, endpoint_id=AGENT),
        "untrusted": pki.issue(other, endpoint_id=AGENT),
    }


async def _echo(conn):
    while data := await conn.reader.read(4096):
        await conn.write(data)


def test_plain_echo_nodelay_and_timeline():
    async def main():
        tl = Timeline()
        server = await Server("test", _echo, timeline=tl).start_tcp()
        async with server:
            conn = await open_connection("test", "127.0.0.1", server.port, timeline=tl)
            sock = conn.writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await conn.write(b"hello")
            assert await asyncio.wait_for(conn.reader.readexactly(5), STEP) == b"hello"
            server_conn = next(iter(server.connections.values()))
            ssock = server_conn.writer.get_extra_info("socket")
            assert ssock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await conn.close()
            await tl.expect("conn.close", within=STEP, direction="in")
        assert [e.kind for e in tl.filter(direction="in")] == ["conn.open", "conn.close"]
    asyncio.run(main())


def test_mutual_tls_reads_peer_endpoint_id(creds):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        cctx = pki.ssl_context("client", creds["client"], trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx, timeline=tl).start_tcp()
        async with server:
            conn = await open_connection("test", "127.0.0.1", server.port, ssl_context=cctx,
                                         timeline=tl)
            assert conn.tls and conn.peer_endpoint_ids == [CTRL]
            await conn.write(b"over tls")
            assert await asyncio.wait_for(conn.reader.readexactly(8), STEP) == b"over tls"
            done = await tl.expect("tls.handshake_done", within=STEP, direction="in")
            assert done.decoded["peer_endpoint_ids"] == [AGENT]
            await conn.close()
    asyncio.run(main())


def test_untrusted_client_cert_is_a_timeline_event(creds):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        cctx = pki.ssl_context("client", creds["untrusted"], trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx, timeline=tl).start_tcp()
        async with server:
            try:
                conn = await open_connection("test", "127.0.0.1", server.port, ssl_context=cctx,
                                             timeline=tl)
                # TLS 1.3: the client learns of the rejection on its first read.
                await conn.write(b"x")
                await asyncio.wait_for(conn.reader.read(1), STEP)
            except ConnectionError:
                pass
            failed = await tl.expect("tls.handshake_failed", within=STEP, direction="in")
            assert "CERTIFICATE" in failed.decoded["reason"].upper()
            assert not server.connections
    asyncio.run(main())


def test_client_side_handshake_failure_raises_connection_error(creds):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", creds["untrusted"], require_client_cert=False)
        cctx = pki.ssl_context("client", None, trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx).start_tcp()
        async with server:
            with pytest.raises(ConnectionError, match="TLS handshake"):
                await open_connection("test", "127.0.0.1", server.port, ssl_context=cctx,
                                      timeline=tl)
        assert tl.filter(kind="tls.handshake_failed", direction="out")
    asyncio.run(main())


def test_connect_refused_is_connection_error():
    async def main():
        server = await Server("test", _echo).start_tcp()
        port = server.port
        await server.close()
        with pytest.raises(ConnectionError, match="cannot connect"):
            await open_connection("test", "127.0.0.1", port, timeout=STEP)
    asyncio.run(main())


def test_unix_socket_server(tmp_path):
    async def main():
        path = str(tmp_path / "usp.sock")
        tl = Timeline()
        server = await Server("uds", _echo, timeline=tl).start_unix(path)
        async with server:
            conn = await open_unix_connection("uds", path, timeline=tl)
            await conn.write(b"abc")
            assert await asyncio.wait_for(conn.reader.readexactly(3), STEP) == b"abc"
            await conn.close()
        with pytest.raises(ConnectionError):
            await open_unix_connection("uds", str(tmp_path / "missing.sock"))
    asyncio.run(main())


def test_broken_handler_does_not_kill_server():
    async def bad(conn):
        raise RuntimeError("suite bug")

    async def main():
        tl = Timeline()
        server = await Server("test", bad, timeline=tl).start_tcp()
        async with server:
            for _ in range(2):
                conn = await open_connection("test", "127.0.0.1", server.port)
                assert await asyncio.wait_for(conn.reader.read(), STEP) == b""
                await conn.close()
            await tl.expect("conn.handler_error", within=STEP)
    asyncio.run(main())


def test_accept_filter_refuses_before_tls(creds):
    async def main():
        tl = Timeline()
        attempts = []

        def refuse(conn_id, peer):
            attempts.append(peer)
            return False

        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx, timeline=tl,
                              accept_filter=refuse).start_tcp()
        async with server:
            cctx = pki.ssl_context("client", creds["client"], trust=[creds["ca"]])
            with pytest.raises(ConnectionError):
                await open_connection("test", "127.0.0.1", server.port, ssl_context=cctx)
            await tl.expect("conn.close", within=STEP, where=lambda e: e.note == "refused by scenario")
        assert len(attempts) == 1 and not tl.filter(kind="tls.handshake_*", direction="in")
    asyncio.run(main())

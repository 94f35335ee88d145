"""Shared MTP sockets: NODELAY, TLS with handshake failures as events, UDS."""

from __future__ import annotations

import asyncio
import socket

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp import pki
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import (
    Server,
    open_connection,
    open_unix_connection,
    peer_certificate_summary,
)

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


def test_handshake_done_carries_the_peer_certificate(creds):
    """TP-469 4.1 / R-SEC.10: the timeline shows the peer's certificate (SAN URIs,
    validity now), on both sides of a mutual TLS connection."""
    async def main():
        tl, ctl = Timeline(), Timeline()
        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        cctx = pki.ssl_context("client", creds["client"], trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx, timeline=tl).start_tcp()
        async with server:
            conn = await open_connection("test", "127.0.0.1", server.port, ssl_context=cctx,
                                         timeline=ctl)
            seen_by_server = await tl.expect("tls.handshake_done", within=STEP, direction="in")
            cert = seen_by_server.decoded["peer_certificate"]
            assert cert["status"] == "valid" and cert["endpoint_ids"] == [AGENT]
            assert cert["san"]["uri"] == [pki.USP_ID_URN_PREFIX + AGENT]
            seen_by_client = ctl.filter("tls.handshake_done", direction="out")[0]
            assert seen_by_client.decoded["peer_certificate"]["san"]["ip"] == ["127.0.0.1"]
            await conn.close()
    asyncio.run(main())


def test_peer_certificate_summary_of_nothing_or_garbage(creds):
    assert peer_certificate_summary(None) is None
    assert peer_certificate_summary(b"") is None
    assert peer_certificate_summary(b"\x30\x03\x02\x01\x00") is None
    der = creds["client"].cert.public_bytes(serialization.Encoding.DER)
    assert peer_certificate_summary(der)["endpoint_ids"] == [AGENT]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_peer_certificate_summary_never_raises(data):
    """Whatever a peer sends as its certificate, the summary is a dict or None."""
    assert peer_certificate_summary(data) is None or isinstance(peer_certificate_summary(data),
                                                                dict)


def test_certificate_changed_during_the_handshake_closes_the_connection(creds):
    """A handshake that started before the server's certificate changed ends in a
    closed connection: every session after the change met the new certificate."""
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        server = await Server("test", _echo, ssl_context=sctx, timeline=tl).start_tcp()
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await tl.expect("conn.open", within=STEP, direction="in")
            server.ssl_context = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
            cctx = pki.ssl_context("client", creds["client"], trust=[creds["ca"]])
            await writer.start_tls(cctx, server_hostname="127.0.0.1")
            closed = await tl.expect("conn.close", within=STEP, direction="local")
            assert "changed" in (closed.note or "")
            assert await asyncio.wait_for(reader.read(), STEP) == b""
            assert not server.connections
            writer.close()
    asyncio.run(main())


def test_present_tls_swaps_the_certificate_and_drops_connections(creds):
    """ServerHost.present_tls (TP-469 2.6, 2.8, 4.1): open connections are closed and the
    next one meets the new certificate; a plain server has none to change."""
    from conformance.mtp.mqtt.broker import MQTTBroker

    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", creds["server"], trust=[creds["ca"]])
        broker = await MQTTBroker(timeline=tl, ssl_context=sctx).start()
        other = pki.issue(creds["ca"], endpoint_id="proto::other", ips=["127.0.0.1"])
        try:
            cctx = pki.ssl_context("client", creds["client"], trust=[creds["ca"]])
            first = await open_connection("mqtt", "127.0.0.1", broker.port, ssl_context=cctx)
            assert first.peer_endpoint_ids == [CTRL]
            await tl.expect("tls.handshake_done", within=STEP, direction="in")
            closed = await broker.present_tls(pki.ssl_context("server", other, trust=[creds["ca"]]))
            assert closed == 1
            assert await asyncio.wait_for(first.reader.read(), STEP) == b""
            second = await open_connection("mqtt", "127.0.0.1", broker.port, ssl_context=cctx)
            assert second.peer_endpoint_ids == ["proto::other"]
            await second.close()
        finally:
            await broker.close()
        plain = await MQTTBroker().start()
        try:
            with pytest.raises(ValueError, match="does not use TLS"):
                await plain.present_tls(sctx)
        finally:
            await plain.close()
    asyncio.run(main())

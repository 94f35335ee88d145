"""MTP layer: sans-I/O codecs per Message Transfer Protocol (MQTT, STOMP,
WebSocket, UDS), the asyncio servers and peers the suite runs, TLS/PKI and
the timeline that records every byte in both directions.
"""

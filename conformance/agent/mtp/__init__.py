"""The reference Agent's MTP layer: MQTT, STOMP, WebSocket and UDS over real sockets.

* :mod:`.base`      - :class:`AgentMTP`, :class:`Route`, :class:`ControllerRoute`
* :mod:`.backoff`   - the reconnect algorithms TR-369 / TR-181 give each MTP
* :mod:`.mqtt`      - MQTT 3.1.1 / 5.0 client (paho-mqtt in its own thread)
* :mod:`.stomp`     - STOMP 1.2 client on the suite's codec
* :mod:`.websocket` - WebSocket client sessions and server on the suite's codec
* :mod:`.uds`       - UNIX domain socket client on the suite's handshake machine
"""

from __future__ import annotations

from conformance.agent.mtp.backoff import (
    Backoff,
    MQTTRetry,
    STOMPRetry,
    UDSRetry,
    WebSocketRetry,
)
from conformance.agent.mtp.base import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)

__all__ = [
    "AgentMTP", "Backoff", "ControllerRoute", "MQTTRetry", "MTPNotConnected", "NoRoute",
    "Route", "STOMPRetry", "UDSRetry", "WebSocketRetry",
]

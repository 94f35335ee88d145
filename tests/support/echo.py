"""A minimal USP echo agent core: answers Get with a fixed GetResp.

Used as the far end of MTP integration tests and benchmarks, behind
independent MTP clients (paho-mqtt, stomp.py, aiohttp, our UDS client). It
is not the reference agent: it only proves that Records cross an MTP intact.
"""

from __future__ import annotations

from conformance.usp import messages, records

AGENT_ID = "os::012345-ECHO"


def answer(data: bytes, *, agent_id: str = AGENT_ID) -> bytes | None:
    """The Record bytes answering a Get Record, or None for anything else."""
    try:
        rec = records.parse_record(data)
        msg = records.unwrap_msg(rec)
    except (records.RecordDecodeError, records.MsgDecodeError):
        return None
    if msg is None or msg.body.request.WhichOneof("req_type") != "get":
        return None
    results = [{"requested_path": path,
                "resolved_path_results": [{"resolved_path": path,
                                           "result_params": {"SoftwareVersion": "echo-1"}}]}
               for path in msg.body.request.get.param_paths]
    resp = messages.response("get_resp", {"req_path_results": results}, msg_id=msg.header.msg_id)
    return records.serialize(records.no_session_record(resp, to_id=rec.from_id, from_id=agent_id))

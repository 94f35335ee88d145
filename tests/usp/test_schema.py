"""The committed protobuf code matches our .proto files and the official schema."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from conformance.usp import schema
from conformance.usp.pb import usp_msg_1_4_pb2, usp_record_1_4_pb2

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
PB_DIR = ROOT / "conformance" / "usp" / "pb"


def test_committed_generated_code_is_fresh(tmp_path):
    """Regenerating with the pinned generators gives the committed bytes."""
    assert importlib.util.find_spec("grpc_tools") is not None, "install .[test] (grpcio-tools)"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == ["usp_msg_1_4_pb2.py", "usp_msg_1_4_pb2.pyi",
                         "usp_record_1_4_pb2.py", "usp_record_1_4_pb2.pyi"]
    stale = [name for name in generated
             if (tmp_path / name).read_bytes() != (PB_DIR / name).read_bytes()]
    assert not stale, f"stale generated code {stale}: run python scripts/gen_proto.py"


def _normalized(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    out = descriptor_pb2.FileDescriptorProto()
    out.CopyFrom(fdp)
    out.ClearField("name")
    out.ClearField("source_code_info")
    return out


def _compile(proto_dir, name, out):
    from grpc_tools import protoc  # test extra

    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}",
                      str(proto_dir / name)])
    assert rc == 0, f"protoc failed on {proto_dir / name}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]


@pytest.mark.parametrize("name", ["usp-msg-1-4.proto", "usp-record-1-4.proto"])
def test_schema_identical_to_official(name, reference_dir, tmp_path):
    """Every message, field, number, type, enum and oneof equals the BBF schema (R-ENC.0/1)."""
    ours = _compile(ROOT / "conformance" / "usp" / "proto", name, tmp_path / "ours.pb")
    official = _compile(reference_dir / "tr-369", name, tmp_path / "official.pb")
    assert _normalized(ours) == _normalized(official)


def test_generated_descriptor_matches_proto_source(tmp_path):
    """The importable modules carry the schema of the .proto files they came from."""
    for module, name in ((usp_msg_1_4_pb2, "usp-msg-1-4.proto"),
                         (usp_record_1_4_pb2, "usp-record-1-4.proto")):
        source = _compile(ROOT / "conformance" / "usp" / "proto", name, tmp_path / "src.pb")
        loaded = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(loaded)
        for fdp in (source, loaded):
            for msg in _all_messages(fdp.message_type):
                for fld in msg.field:
                    fld.ClearField("json_name")
        assert _normalized(loaded) == _normalized(source)


def _all_messages(messages):
    for msg in messages:
        yield msg
        yield from _all_messages(msg.nested_type)


def test_body_tables_cover_every_msg_type():
    assert set(schema.MSG_TYPE_BODY) == set(schema.MsgType.values())
    assert schema.MSG_TYPE_BODY[schema.MsgType.ERROR] == ("error", None)
    assert schema.MSG_TYPE_BODY[schema.MsgType.GET_SUPPORTED_PROTO_RESP] == (
        "response", "get_supported_protocol_resp")
    assert set(schema.REQUEST_KINDS) == {f.name for f in schema.Request.DESCRIPTOR.fields}
    assert set(schema.RESPONSE_KINDS) == {f.name for f in schema.Response.DESCRIPTOR.fields}


def test_msg_type_name_and_body_kind():
    assert schema.msg_type_name(schema.MsgType.GET) == "GET"
    assert schema.msg_type_name(1234) == "UNKNOWN(1234)"
    msg = schema.Msg()
    assert schema.body_kind(msg) == (None, None)
    msg.body.error.err_code = 7000
    assert schema.body_kind(msg) == ("error", None)
    msg.body.request.get.param_paths.append("Device.")
    assert schema.body_kind(msg) == ("request", "get")

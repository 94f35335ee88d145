"""Every protobuf example in TP-469 parses with our schema (developer aid).

TP-469 marks its message examples as ```{filter=pbv type=Msg}``` blocks in
protobuf text format. Parsing all of them with our builder proves that the
schema and :func:`conformance.usp.messages.msg_from_text` accept the form
the case files copy from. Skipped where ../shared/reference is absent.
"""

from __future__ import annotations

import re

import pytest
from google.protobuf import text_format

from conformance.usp import messages, schema
from conformance.usp.metrics import check_msg

BLOCK = re.compile(r"```\{filter=pbv type=(?P<type>\w+)[^}]*\}\n(?P<body>.*?)```", re.S)


def _blocks(reference_dir):
    for path in sorted((reference_dir / "tp-469").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{path.name}:{line}", match["type"], match["body"]


def test_all_tp469_blocks_parse(reference_dir):
    blocks = list(_blocks(reference_dir))
    msgs = [b for b in blocks if b[1] == "Msg"]
    assert len(msgs) >= 300, "the block pattern no longer finds TP-469's examples"
    failures = []
    alloc = messages.MsgIdAllocator("tp469")
    for where, kind, body in blocks:
        try:
            if kind == "Msg":
                msg = messages.msg_from_text(body, allocator=alloc)
                assert msg.header.msg_id
            else:
                text_format.Parse(body, schema.Record())
        except (messages.MsgBuildError, text_format.ParseError) as exc:
            failures.append(f"{where}: {exc}")
    assert not failures, "\n".join(failures)


def test_tp469_request_examples_have_consistent_headers(reference_dir):
    """The msg_type printed in each example agrees with its body (R-MSG.10)."""
    bad = []
    for where, kind, body in _blocks(reference_dir):
        if kind != "Msg":
            continue
        msg = messages.msg_from_text(body, msg_id="x")
        if msg.HasField("body") and not messages.header_matches_body(msg):
            bad.append(f"{where}: {schema.msg_type_name(msg.header.msg_type)}")
    assert not bad, bad


@pytest.mark.parametrize("metric", [2])
def test_tp469_examples_pass_schema_metric(reference_dir, metric):
    """No example breaks the schema metric (their <placeholders> may break grammar)."""
    bad = []
    for where, kind, body in _blocks(reference_dir):
        if kind == "Msg":
            msg = messages.msg_from_text(body, msg_id="x")
            bad += [f"{where}: {v}" for v in check_msg(msg) if v.metric == metric]
    assert not bad, "\n".join(bad[:20])

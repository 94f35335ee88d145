"""Generated protobuf code for USP 1.4 (do not edit; see scripts/gen_proto.py)."""

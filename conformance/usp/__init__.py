"""Sans-I/O USP protocol core (TR-369): schema, records, messages, sessions,
paths, endpoint ids, error codes and the universal test metrics.

Nothing in this package opens a socket, starts a thread or reads a clock on
its own: callers pass bytes and time in, and get bytes, objects and events
out. Both the reference Controller and the reference Agent build on it.
"""

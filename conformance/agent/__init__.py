"""The reference USP Agent: a real TR-369 Agent built on the TR-181 definitions in ``datamodel``."""

"""The reference USP Controller: identities, requests/responses, notifications,
session contexts, and the external-broker mode."""

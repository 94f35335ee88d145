"""The declarative case engine: schema, loader, runner and matchers."""

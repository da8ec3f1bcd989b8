"""Upstream routes to Command Code: each encodes canonical requests and decodes its stream."""

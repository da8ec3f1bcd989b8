"""Blueprints: one per client surface, each thin -- parse, call, relay."""

"""Blueprints: one per client surface, each thin -- parse, call, relay.

Besides the four blueprints, ``common`` reads request bodies, ``streaming`` turns a call's bytes
into an SSE response, and ``error_handlers`` answers each blueprint's failures in its codec's
envelope: the only modules of the gateway, with the app factory, that know Flask.
"""

"""The ``auto`` route: the Provider API when the key has it, the CLI route when it does not.

Each key's first request goes to the Provider API.  If that answers ``403 upgrade_required``
(a Go-plan key), the key is remembered as CLI-only in the route memory
(:class:`gateway.state.RouteMemory`: a file every worker shares, or Redis for several
instances), and the same request is sent on the CLI route.  The 403 arrives as the response
status, before any event, so the client never sees a byte of the failed attempt: the first
event, on whichever route, is the first thing relayed.
"""
from __future__ import annotations

import logging

from .. import keys
from ..canonical import ChatRequest
from ..key_routes import CLI, PROVIDER
from ..state import RouteMemory
from .base import Route, UpstreamStream
from .failures import NoProviderAccess

log = logging.getLogger("gateway.route")


class AutoRoute:
    """Composes two routes by the contract alone (:mod:`gateway.upstream.routes` builds them):
    ``provider`` first, ``cli`` for the keys whose plan has no Provider API."""

    def __init__(self, provider: Route, cli: Route, memory: RouteMemory):
        self.provider = provider
        self.cli = cli
        self.memory = memory

    def open(self, req: ChatRequest, key: str) -> "AutoStream":
        return AutoStream(self, req, keys.require(key))


class AutoStream(UpstreamStream):
    """Chooses the route when iterated (on the reader thread), then relays that route's events."""

    def __init__(self, route: AutoRoute, req: ChatRequest, key: str):
        super().__init__()
        self._route = route
        self._req = req
        self._key = key

    def _open(self, route: Route) -> UpstreamStream:
        """``route``'s stream for this request, made the one :meth:`abort` stops."""
        stream = route.open(self._req, self._key)
        self._hold(stream.abort)
        self.route_name = stream.route_name
        return stream

    def _provider_or_none(self):
        """The connected Provider API stream, or None when this key must use the CLI route."""
        memory, label = self._route.memory, keys.label(self._key)
        known = memory.get(label)
        if known == CLI:
            return None
        stream = self._open(self._route.provider)
        try:
            if known == PROVIDER:
                stream.connect()
                return stream
            with memory.probing():          # one attempt per key, across every worker
                known = memory.get(label, fresh=True)
                if known == CLI:
                    return None
                try:
                    stream.connect()
                except NoProviderAccess:
                    memory.remember(label, CLI)
                    log.info("key %s has no Provider API access: using the CLI route for it", label)
                    return None
                if known is None:
                    memory.remember(label, PROVIDER)
                return stream
        except NoProviderAccess:            # a Provider key whose plan changed to Go
            with memory.probing():
                memory.remember(label, CLI)
            log.info("key %s lost Provider API access: using the CLI route for it", label)
            return None

    def __iter__(self):
        stream = self._provider_or_none()
        if stream is None:
            stream = self._open(self._route.cli)
        if self.aborted:
            return
        yield from stream

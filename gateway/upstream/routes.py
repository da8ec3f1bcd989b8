"""Which route each ``commandcode.mode`` names, built from the configuration.

The one place that reads the ``commandcode`` settings for routes: each route's constructor takes
only what it uses, so a route can be built in a test (or composed, as ``auto`` composes the
other two) without a configuration, and adding a mode is one entry in :data:`ROUTES`.

The key memory of ``auto`` is handed in, not built here: where the state lives (the files of
one machine, or Redis for several instances) is chosen once, by ``state.open_shared``.
"""
from __future__ import annotations

from typing import Callable

from .. import transport
from ..config import CommandCode
from ..key_routes import CLI, PROVIDER
from ..state import MemoryKeyRoutes, RouteMemory
from .auto import AutoRoute
from .base import Route
from .cli import CliRoute
from .provider import ProviderRoute

AUTO = "auto"


def _cli(cc: CommandCode, transport_: transport.Transport, memory: RouteMemory | None) -> Route:
    return CliRoute(transport_, cc.base_url, cc.cli_version)


def _provider(cc: CommandCode, transport_: transport.Transport,
              memory: RouteMemory | None) -> Route:
    return ProviderRoute(transport_, cc.base_url)


def _auto(cc: CommandCode, transport_: transport.Transport, memory: RouteMemory | None) -> Route:
    # without a memory (a test, an embedding) the routes are remembered by this process only
    return AutoRoute(build(PROVIDER, cc, transport_), build(CLI, cc, transport_),
                     memory if memory is not None else MemoryKeyRoutes())


#: ``commandcode.mode`` -> the function that builds its route from the ``commandcode`` settings,
#: the shared transport and the key memory ``auto`` keeps its findings in
ROUTES: dict[str, Callable[[CommandCode, transport.Transport, RouteMemory | None], Route]] = {
    CLI: _cli,
    PROVIDER: _provider,
    AUTO: _auto,
}


def build(mode: str, cc: CommandCode, transport_: transport.Transport,
          key_routes: RouteMemory | None = None) -> Route:
    """The route of ``mode`` (one of :data:`ROUTES`; the configuration was validated);
    ``key_routes`` is where ``auto`` remembers each key's route (see ``state.open_shared``)."""
    return ROUTES[mode](cc, transport_, key_routes)

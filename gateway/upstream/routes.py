"""Which route each ``commandcode.mode`` names, built from the configuration.

The one place that reads the ``commandcode`` settings for routes: each route's constructor takes
only what it uses, so a route can be built in a test (or composed, as ``auto`` composes the
other two) without a configuration, and adding a mode is one entry in :data:`ROUTES`.
"""
from __future__ import annotations

import os
from typing import Callable

from .. import transport
from ..config import CommandCode
from ..key_routes import CLI, PROVIDER, KeyRoutes
from .auto import AutoRoute
from .base import Route
from .cli import CliRoute
from .provider import ProviderRoute

AUTO = "auto"


def _cli(cc: CommandCode, transport_: transport.Transport, state_dir: str) -> Route:
    return CliRoute(transport_, cc.base_url, cc.cli_version)


def _provider(cc: CommandCode, transport_: transport.Transport, state_dir: str) -> Route:
    return ProviderRoute(transport_, cc.base_url)


def _auto(cc: CommandCode, transport_: transport.Transport, state_dir: str) -> Route:
    return AutoRoute(build(PROVIDER, cc, transport_, state_dir),
                     build(CLI, cc, transport_, state_dir),
                     KeyRoutes(os.path.join(state_dir, "key_routes.json")))


#: ``commandcode.mode`` -> the function that builds its route from the ``commandcode`` settings,
#: the shared transport and the folder of the gateway's state files
ROUTES: dict[str, Callable[[CommandCode, transport.Transport, str], Route]] = {
    CLI: _cli,
    PROVIDER: _provider,
    AUTO: _auto,
}


def build(mode: str, cc: CommandCode, transport_: transport.Transport, state_dir: str) -> Route:
    """The route of ``mode`` (one of :data:`ROUTES`; the configuration was validated)."""
    return ROUTES[mode](cc, transport_, state_dir)

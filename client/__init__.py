"""browserd client: Client (blocking) and AsyncClient, their resources, and the errors.

from browserd.client import Client
with Client() as bd:
    runtime = bd.runtimes.browser.launch(name="crm")
    conn = runtime.connections.create(ttl_s=600)
    ...  # playwright.chromium.connect_over_cdp(conn.endpoint.url)
    runtime.stop()
"""

from . import errors
from ._async import AsyncClient, Subscription
from ._sync import (
    BrowserRuntimes,
    Client,
    Connection,
    Connections,
    Run,
    RunEvents,
    Runs,
    Runtime,
    Runtimes,
    Space,
    Spaces,
)
from .errors import BrowserdError
from .records import Endpoint, Event
from .resources import (
    AsyncBrowserRuntimes,
    AsyncConnection,
    AsyncConnections,
    AsyncRun,
    AsyncRunEvents,
    AsyncRuns,
    AsyncRuntime,
    AsyncRuntimes,
    AsyncSpace,
    AsyncSpaces,
)

__all__ = [
    "AsyncBrowserRuntimes",
    "AsyncClient",
    "AsyncConnection",
    "AsyncConnections",
    "AsyncRun",
    "AsyncRunEvents",
    "AsyncRuns",
    "AsyncRuntime",
    "AsyncRuntimes",
    "AsyncSpace",
    "AsyncSpaces",
    "BrowserRuntimes",
    "BrowserdError",
    "Client",
    "Connection",
    "Connections",
    "Endpoint",
    "Event",
    "Run",
    "RunEvents",
    "Runs",
    "Runtime",
    "Runtimes",
    "Space",
    "Spaces",
    "Subscription",
    "errors",
]

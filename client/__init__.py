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
    Profile,
    Profiles,
    Run,
    RunEvents,
    Runs,
    Runtime,
    Runtimes,
    Space,
    Spaces,
)
from .errors import BrowserdError
from .records import Endpoint, Event, RuntimeStats
from .resources import (
    AsyncBrowserRuntimes,
    AsyncConnection,
    AsyncConnections,
    AsyncProfile,
    AsyncProfiles,
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
    "AsyncProfile",
    "AsyncProfiles",
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
    "Profile",
    "Profiles",
    "Run",
    "RunEvents",
    "Runs",
    "Runtime",
    "RuntimeStats",
    "Runtimes",
    "Space",
    "Spaces",
    "Subscription",
    "errors",
]

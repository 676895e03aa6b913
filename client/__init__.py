"""browserd client: Client (blocking) and AsyncClient, their resources, and the errors.

from browserd.client import Client
with Client() as bd:                 # or bd = Client() ... bd.close()
    runtime = bd.runtimes.browser.launch(name="crm")
    conn = runtime.connections.create(ttl_s=600)
    ...  # playwright.chromium.connect_over_cdp(conn.endpoint.url)
    runtime.stop()
"""

from . import errors
from ._async.artifacts import AsyncRunArtifacts
from ._async.client import AsyncClient
from ._async.control import AsyncFiles, AsyncInvocation, AsyncInvocations, AsyncTargets
from ._async.resources import (
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
from ._async.transport import Subscription
from ._sync.artifacts import RunArtifacts
from ._sync.client import Client
from ._sync.control import Files, Invocation, Invocations, Targets
from ._sync.resources import (
    BrowserRuntimes,
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
from .records import (
    Artifact,
    ArtifactChunk,
    CollectedFile,
    Endpoint,
    Event,
    RuntimeFile,
    RuntimeStats,
    Target,
)

__all__ = [
    "Artifact",
    "ArtifactChunk",
    "AsyncBrowserRuntimes",
    "AsyncClient",
    "AsyncConnection",
    "AsyncConnections",
    "AsyncFiles",
    "AsyncInvocation",
    "AsyncInvocations",
    "AsyncProfile",
    "AsyncProfiles",
    "AsyncRun",
    "AsyncRunArtifacts",
    "AsyncRunEvents",
    "AsyncRuns",
    "AsyncRuntime",
    "AsyncRuntimes",
    "AsyncSpace",
    "AsyncSpaces",
    "AsyncTargets",
    "BrowserRuntimes",
    "BrowserdError",
    "Client",
    "CollectedFile",
    "Connection",
    "Connections",
    "Endpoint",
    "Event",
    "Files",
    "Invocation",
    "Invocations",
    "Profile",
    "Profiles",
    "Run",
    "RunArtifacts",
    "RunEvents",
    "Runs",
    "Runtime",
    "RuntimeFile",
    "RuntimeStats",
    "Runtimes",
    "Space",
    "Spaces",
    "Subscription",
    "Target",
    "Targets",
    "errors",
]

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
from ._sync_artifacts import RunArtifacts
from ._sync_control import Files, Invocation, Invocations, Targets
from .artifacts import AsyncRunArtifacts
from .control import (
    AsyncFiles,
    AsyncInvocation,
    AsyncInvocations,
    AsyncTargets,
    CollectedFile,
)
from .errors import BrowserdError
from .records import (
    Artifact,
    ArtifactChunk,
    Endpoint,
    Event,
    RuntimeFile,
    RuntimeStats,
    Target,
)
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

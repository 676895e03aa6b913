"""The SSH path's cost: the same daemon through `ssh HOST browserctl dial-stdio` and its local
forwards, against its local socket and CDP port.

One daemon, one Chromium, and a throwaway sshd on a loopback port of this machine
(tests/sshd.py: its own keys and config), so the network is loopback and what is measured is
what the path itself adds: ssh's encryption and multiplexing, `dial-stdio`'s copying, and the
forwards. Rows:

- an RPC round trip, `spaces.get {name: default}` with the blocking `Client`, sequential (the
  median per call), over ssh against the local socket;
- a CDP round trip, Playwright's `page.evaluate("1")` through a lease's URL (the median per
  call), through the client's SSH forward against the lease URL used locally;
- the time to open a client over ssh (ssh's connection, login, `hello`), for information.

On a real network the round trip time of the link adds to each call; these ratios are the
floor. Without OpenSSH's server on the machine every row is skipped with a note.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import sync_playwright

from browserd.client import Client
from tests.sshd import Sshd, sshd_available

from .harness import BIN, CHROMIUM, TMP_ROOT, DaemonUnderTest, median
from .report import Row, skipped

SCENARIO = "ssh"
METHOD = "spaces.get"
PARAMS = {"name": "default"}
RPC_METRIC = "RPC round trip over ssh (spaces.get, Client)"
CDP_METRIC = "CDP evaluate('1') round trip through the ssh forward"
OPEN_METRIC = "open a Client over ssh (connect, login, hello)"


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rpc_latency(client: Client, calls: int) -> float:
    for _ in range(50):  # warm-up
        client.call(METHOD, PARAMS)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.call(METHOD, PARAMS)
        times.append(time.perf_counter() - start)
    return median(times)


def cdp_latency(url: str, calls: int) -> float:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(url, timeout=30_000)
        try:
            page = browser.contexts[0].new_page()
            for _ in range(20):
                page.evaluate("1")
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                page.evaluate("1")
                times.append(time.perf_counter() - start)
            page.close()
        finally:
            browser.close()
    return median(times)


def run(*, quick: bool) -> list[Row]:
    missing = sshd_available()
    if missing is not None:
        return [skipped(SCENARIO, metric, unit, missing)
                for metric, unit in ((RPC_METRIC, "us"), (CDP_METRIC, "us"),
                                     (OPEN_METRIC, "ms"))]
    calls, evaluates, opens = (300, 100, 3) if quick else (2000, 500, 10)
    base = Path(tempfile.mkdtemp(prefix="bds-", dir=TMP_ROOT))
    try:
        with DaemonUnderTest({"browser.executable": CHROMIUM}, label="ssh") as daemon:
            sshd = Sshd(base / "sshd", {"BROWSERD_SOCKET": str(daemon.socket)})
            sshd.start()
            try:
                with _environ(BROWSERD_SSH_COMMAND=sshd.ssh_command(),
                              BROWSERD_REMOTE_BROWSERCTL=str(BIN / "browserctl")):
                    open_times = []
                    for _ in range(opens):
                        start = time.perf_counter()
                        Client(host=sshd.url).open().close()
                        open_times.append(time.perf_counter() - start)
                    with Client(daemon.socket) as local, Client(host=sshd.url) as far:
                        rpc_local = rpc_latency(local, calls)
                        rpc_far = rpc_latency(far, calls)
                        runtime = local.runtimes.browser.launch(name="ssh-bench")
                        near_lease = runtime.connections.create(ttl_s=3600)
                        far_lease = far.runtimes.get("ssh-bench").connections.create(ttl_s=3600)
                        assert near_lease.endpoint is not None and far_lease.endpoint is not None
                        cdp_local = cdp_latency(near_lease.endpoint.url, evaluates)
                        cdp_far = cdp_latency(far_lease.endpoint.url, evaluates)
                        runtime.stop()
                        runtime.delete()
            finally:
                sshd.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return [
        Row(SCENARIO, RPC_METRIC, rpc_far * 1e6, "us", baseline=rpc_local * 1e6,
            note="baseline: the same call on the local socket"),
        Row(SCENARIO, CDP_METRIC, cdp_far * 1e6, "us", baseline=cdp_local * 1e6,
            note="baseline: the lease URL used on the daemon's machine"),
        Row(SCENARIO, OPEN_METRIC, median(open_times) * 1e3, "ms"),
    ]

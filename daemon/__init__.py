"""browserd daemon: supervises Chromium runtimes and serves the msgpack-RPC API.

The layers, top to bottom; a module imports only from its own layer and those below it:

    main, service, health    the `browserd` command; the composition root; watchdog rounds
    rpc/  web/               the socket, the method table, one module of methods per resource |
                             the web pages (live views) on the CDP port (siblings)
    control/  services/      the control surface | the workers beside each run (siblings)
    core/                    the model's state and every change to it
    browser/                 one browser's processes, profiles and the warm pool
    cdp/  store/             the CDP endpoint and client | files on disk
    system/                  the process's own resources and the service manager
    base/                    facts: errors, names, config, records, params, flags

Each folder's __init__ says what its layer does. docs/development.md walks through a launch,
a CDP attach and a follow across them.
"""

from browserd.client._version import __version__

__all__ = ["__version__"]

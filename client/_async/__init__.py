"""The async client, written by hand: AsyncClient (client.py) and its resources (resources.py,
control.py, artifacts.py) over AsyncTransport (transport.py, anyio on a non-blocking socket).

``scripts/unasync.py`` makes ``../_sync/`` from the client and resource modules; the
transport and backend.py are each side's own. Imports: ``..wire``, ``..session``,
``..records``, ``..errors``, ``..paths``; never ``_sync``.
"""

"""The blocking client: Client (client.py) and its resources (resources.py, control.py,
artifacts.py) are GENERATED from ``../_async/`` by ``scripts/unasync.py`` (edit the async
source, then run it; `make lint` fails while they are stale). Transport (transport.py, a
plain blocking socket) and backend.py are written by hand. Imports: ``..wire``,
``..session``, ``..records``, ``..errors``, ``..paths``; never ``_async``.
"""

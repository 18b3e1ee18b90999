"""Replicated volumes: replica servers, the controller that fans writes out to them, and rebuild.

Modules (each with one job):

* :mod:`~iscsikit.replica.protocol`: the wire protocol, sans-IO (frames, codec, session state);
* :mod:`~iscsikit.replica.auth`: the shared-secret handshake (sans-IO), secret files, TLS contexts;
* :mod:`~iscsikit.replica.store`: a replica's sparse data file and metadata on disk;
* :mod:`~iscsikit.replica.server`: the asyncio replica server (``iscsikit replica serve``);
* :mod:`~iscsikit.replica.client`: the controller's asyncio connection to one replica;
* :mod:`~iscsikit.replica.controller`: :class:`ReplicatedBackend`, the ``replicated:`` LUN backend;
* :mod:`~iscsikit.replica.rebuild`: copying a healthy replica onto a new or stale one.

The durability promise and the wire format are in ``docs/replication.md`` and
``docs/replica-protocol.md``. Nothing is imported here so the CLI stays fast to start.
"""

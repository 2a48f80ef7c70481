"""Workloads: Apps supervised on the node (docs/apps.md).

- :mod:`~edgenode.apps.spec`: ``AppSpec``, the App resource parsed and checked (shared
  with the hub's validation: quantities, paths, signals);
- :mod:`~edgenode.apps.artifacts`: the artifact cache (verified, partial, quota) and the
  ``ArtifactSource`` the node's host offers Apps (fetched over the hub link);
- :mod:`~edgenode.apps.service`: ``AppService``, the node service (kind ``App``), built
  on ``plan`` (what runs, its run key), ``supervisor`` (one App's life cycle, sans-I/O),
  ``runner`` (one App on the event loop), ``process``, ``health``, ``limits``, ``logs``,
  ``workdir``, ``container`` and ``state`` (what survives a daemon restart).

Importing this package loads none of them: the daemon imports the service when it runs.
"""

"""Workloads: Apps supervised on the node (docs/apps.md).

- :mod:`~edgenode.apps.spec`: ``AppSpec``, the App resource parsed and checked (shared
  with the hub's validation: quantities, paths, signals);
- :mod:`~edgenode.apps.artifacts`: the artifact cache (verified, partial, quota) and the
  ``ArtifactSource`` the node's host offers Apps (fetched over the hub link).
"""

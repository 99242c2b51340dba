"""Shared fixtures: the exported model repository and a real tritonserver serving it
(defined in ``tests/support.py``; session-scoped: the export, about 20 s, and the server
start, about 5 s, happen once per test session, and the server is always stopped)."""

from support import exported_repository, model_repository, triton_server

__all__ = ["exported_repository", "model_repository", "triton_server"]

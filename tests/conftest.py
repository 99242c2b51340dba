"""Shared fixtures: the exported model repository and a real tritonserver serving it
(defined in ``tests/support.py``; session-scoped: the export, about 20 s, and the server
start, about 5 s, happen once per test session, and the server is always stopped), and the
real PostgreSQL server and S3 emulator of the scale-out tests (``tests/stores.py``)."""

from stores import postgres_server, s3_emulator
from support import exported_repository, model_repository, triton_server

__all__ = [
    "exported_repository",
    "model_repository",
    "postgres_server",
    "s3_emulator",
    "triton_server",
]

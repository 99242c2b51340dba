"""Build hook: generate the gRPC stubs from proto/ before setuptools looks at the packages.

Everything else about the package lives in pyproject.toml. The stubs land in
src/cinetron/api_client/_proto/ (git-ignored) for both ``pip install .`` and ``pip install -e .``.
They are generated when this file is loaded, not only in ``build_py``: setuptools
checks that every listed package directory exists while it computes the metadata,
before any build command runs. grpcio-tools is a build requirement, so it is there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _generate_stubs() -> None:
    spec = importlib.util.spec_from_file_location(
        "_cinetron_protogen", HERE / "src/cinetron/api_client/protogen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate()


_generate_stubs()
setup()

"""How every ``cinetron`` command ends: one line on stderr and an exit code, never a
traceback for something the user can fix.

0 done, 2 bad input, 3 Triton/model unavailable, 4 the model failed, 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from cinetron.core.errors import Cancelled, InvalidArgument, ModelError, Unavailable

EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_MODEL_ERROR, EXIT_INTERRUPTED = 2, 3, 4, 130


def run(prog: str, command: Callable[[], object]) -> int:
    """``command()``, its failures as ``prog: <what> <why>`` and an exit code."""
    try:
        command()
    except InvalidArgument as e:
        print(f"{prog}: invalid {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unavailable as e:
        print(f"{prog}: unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except FileNotFoundError as e:  # --local torch without trained weights, no repository
        print(f"{prog}: unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ModelError as e:
        print(f"{prog}: model error: {e}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    except (KeyboardInterrupt, Cancelled):
        print(f"{prog}: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # an output path is not writable, the disk is full, …
        print(f"{prog}: cannot write the output: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def read_input(option: str, path: object) -> bytes:
    """An input file's bytes; a missing or unreadable one is bad input naming the option."""
    from pathlib import Path

    try:
        return Path(str(path)).read_bytes()
    except OSError as e:
        raise InvalidArgument(option, f"cannot read {path}: {e.strerror or e}") from None

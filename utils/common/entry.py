"""How every entry script ends: a user's mistake is one line on stderr and exit status 1, Ctrl-C is 130.

Training scripts, the front ends (infer.py, webui.py, api.py, evaluate.py), merge_lora.py and the tools all end in
``sys.exit(run_entry(name, main))``. What counts as a user's mistake: a :class:`~utils.common.errors.LawgptError`
(the message names the file:line, argument or field), a ``ValueError`` (a library's argument validation, e.g.
``TrainingArguments``) and an ``OSError`` (a path that cannot be read or written). ``LAWGPT_TRACEBACK=1`` re-raises
instead, for a bug report. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from utils.common.errors import LawgptError

USER_ERRORS = (LawgptError, ValueError, OSError)
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130  # 130 = 128 + SIGINT, what shells report for Ctrl-C


def run_entry(name: str, main: Callable[[], object], interrupted: str = "", errors: tuple = ()) -> int:
    """Run ``main()`` and return the exit status: 0, ``main``'s own int status, 1 on a user error, 130 on Ctrl-C.

    Args:
        name: the script's name, the prefix of every message (``infer: error: …``).
        main: the script's work, called with no arguments (bind them with a lambda).
        interrupted: what a Ctrl-C leaves behind, said after "interrupted" (e.g. how to resume).
        errors: more exception types that count as a user's mistake (a third-party library's own, e.g. json's).
    """
    try:
        result = main()
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted" + (f" ({interrupted})" if interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS + tuple(errors) as e:
        if os.environ.get("LAWGPT_TRACEBACK"):
            raise
        print(f"{name}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0

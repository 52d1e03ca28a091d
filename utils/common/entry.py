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


def exit_process(status: int):
    """``sys.exit(status)``, except in a process of a distributed run (torchrun's ``LOCAL_RANK`` set, torch.distributed
    initialised): there the process group is ended and the process leaves with ``os._exit``, skipping the
    interpreter's teardown. At teardown, threads that torch leaves behind (gloo, FSDP) aborted a rank after its work
    was done and saved ("terminate called without an active exception", SIGABRT, exit -6): fresh-clone CI runs of
    2026-12-06 and 2026-12-07 failed so in test_fsdp, test_dpo and the gpu_check worker, with the group already ended.
    Everything a script writes is closed before it returns, so nothing is lost; stdout and stderr are flushed."""
    distributed = sys.modules.get("torch.distributed")
    if "LOCAL_RANK" in os.environ and distributed is not None and distributed.is_available() \
            and distributed.is_initialized():
        distributed.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def quote_string_flags(fn: Callable, argv: list[str]) -> list[str]:
    """``argv`` with the values of ``fn``'s text flags quoted, so fire keeps them as typed: fire reads every value
    as a Python literal, which makes ``--api_key 12345`` the number 12345 and ``--served_model_name 2024`` a year.
    A flag is text when its annotation is ``str`` or ``str | None``; ``--name value`` and ``--name=value`` forms."""
    import inspect

    text_types = ("str", "str|None", "Optional[str]", "<class'str'>", "typing.Optional[str]")  # as written or as types
    text = {name for name, p in inspect.signature(fn).parameters.items()
            if str(p.annotation).replace(" ", "") in text_types}
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg[2:].partition("=")
        if arg.startswith("--") and name.replace("-", "_") in text:
            if eq:
                out.append(f"--{name}={value!r}")
            elif i + 1 < len(argv):
                out += [arg, repr(argv[i + 1])]
                i += 1
            else:
                out.append(arg)
        else:
            out.append(arg)
        i += 1
    return out


def fire_entry(name: str, fn: Callable, interrupted: str = "", argv: list[str] | None = None, **fire_options) -> int:
    """:func:`run_entry` for a ``fire`` command line: text flags stay text (:func:`quote_string_flags`)."""
    import fire

    argv = sys.argv[1:] if argv is None else argv
    return run_entry(name, lambda: fire.Fire(fn, command=quote_string_flags(fn, argv), **fire_options), interrupted)

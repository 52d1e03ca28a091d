"""The one error base of the project: what a user can fix, said in one line that names the file:line, the argument
or the request field.

Entry scripts (utils/common/entry.py) turn any ``LawgptError`` into ``<script>: error: <message>`` on stderr and exit
status 1; the API turns the ones a request causes into a 4xx naming the field. Each module keeps its own subclass
(``DataError`` for data files, ``ModelLoadError`` for models, …) so callers can catch one kind; every subclass also
keeps the built-in base it had (``ValueError``, ``RuntimeError``, ``LookupError``), so code that caught those still
does. Anything that is not a ``LawgptError`` is a bug and keeps its traceback.
"""


class LawgptError(Exception):
    """Base of every error the user can act on; the message is the whole explanation (one line)."""


class ConfigError(LawgptError, ValueError):
    """Arguments or settings that are invalid or do not fit together (the message names the flag)."""


class ParamError(ConfigError):
    """A generation parameter of the wrong type or out of range, or one an engine cannot apply; ``field`` names it
    (the API's error ``param``). Here, not in utils/inference/engine.py, so the engine backends can raise it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

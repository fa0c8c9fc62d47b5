"""ttslens's own error types: problems with what a user gave (input, files, settings), not bugs.

The CLI and the app print these as one line naming the problem and the fix; anything else keeps its
traceback. Each is also the matching built-in (ValueError, FileNotFoundError, FileExistsError,
RuntimeError), so `except ValueError` callers keep working.
"""


class TTSLensError(Exception):
    """A problem with the user's input, files or environment; the message names the fix."""


class BadInput(TTSLensError, ValueError):
    """A value, option or file content ttslens cannot use."""


class MissingFile(TTSLensError, FileNotFoundError):
    """A file or directory ttslens needs is not there."""


class FileClash(TTSLensError, FileExistsError):
    """An output location already holds something ttslens will not overwrite."""


class EnvironmentProblem(TTSLensError, RuntimeError):
    """Something outside ttslens (a program, a package, a device) is missing or failed."""

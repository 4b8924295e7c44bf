"""The errors fastquad raises on purpose.

- :class:`InputError` (a ``ValueError``): something the caller gave and can fix -- a parameter
  out of range, a file that is not a fastquad file, a folder that cannot be written. The
  message is one line that names the parameter (or file) and what is allowed. The command line
  prints it as ``fastquad: error: ...`` with exit code 2.
- :class:`StorageError` (an ``OSError``): the machine could not store a result (no space left,
  a write that failed). The message says which file, and whether the previous file is intact.
  The command line prints it in one line with exit code 1.

Anything else is a bug in fastquad and is shown as one, with its traceback.
"""


class InputError(ValueError):
    """A problem with what the caller gave; the message names the parameter or file."""


class StorageError(OSError):
    """A result could not be stored (disk full, failed write); says what is intact."""


__all__ = ["InputError", "StorageError"]

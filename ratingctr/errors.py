"""User-facing errors: anything the person at the keyboard can fix.

The CLI prints ``error: <message>`` on one line and exits with status 2 for these;
every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: unknown names, missing or malformed files, impossible settings."""

"""One exception type for every user-facing problem.

The CLI catches :class:`SelfPatchError` and prints its message on one line (no traceback),
so every message must name the file or key at fault and say what to do.
"""


class SelfPatchError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""

"""Errors that are the user's to fix (bad data, bad config, missing inputs).

They are reported as one line naming the culprit and the fix, with exit code 2, instead of a
traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    pass

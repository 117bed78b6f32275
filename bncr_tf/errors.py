"""The package's error types: the ground floor, importing nothing.

Entry points (`bncr_tf.cli.run` and the tools) print `str(error)` of a
`UserError` as one line and exit 2, without a traceback.
"""


class UserError(Exception):
    """A configuration or input problem, reported as one sentence."""


class DataError(UserError):
    """A problem with the user's data, described in one sentence.

    Entry points print `str(error)` without a traceback.
    """

"""Errors that end a command with a one-line message naming the culprit."""


class TxbackupError(Exception):
    """Base of every error txbackup reports to the user as one line.

    The message must name the culprit (an endpoint, a target, a file) and say
    what went wrong; the CLI prints it as ``txbackup: <message>`` and exits 1.
    """

    exit_code = 1


class UsageError(TxbackupError):
    """Bad command-line or configuration input."""

    exit_code = 2


class PauseError(TxbackupError):
    """Pausing or unpausing an application fleet failed."""


class TargetError(TxbackupError):
    """A database target failed (preflight, capture, export or restore)."""


class StorageError(TxbackupError):
    """The backup storage failed (full disk, missing or unreadable artifact)."""


class IntegrityError(TxbackupError):
    """An artifact does not match its recorded checksum or size."""


class NotFoundError(StorageError):
    """A storage object does not exist."""


class AlreadyExistsError(StorageError):
    """A conditional create (``if_absent``) found the name already taken."""


class TransientStorageError(StorageError):
    """A storage failure worth retrying: a timeout, a 5xx answer, throttling, a reset connection."""


class PermanentStorageError(StorageError):
    """A storage failure retrying will not fix: permission denied, bad credentials, missing bucket."""


class RetainedError(PermanentStorageError):
    """A delete refused because the object is under a retention lock (S3 Object Lock
    in compliance or governance mode) until a later date: an immutable backup."""

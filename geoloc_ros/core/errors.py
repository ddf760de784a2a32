"""Exceptions with messages meant for users."""


class GeolocError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class InvalidArgument(GeolocError, ValueError):
    """An argument or config value is out of range or malformed."""


class OutputExists(GeolocError, FileExistsError):
    """An output would overwrite something the user has; pass --force to allow it."""


class IncompatibleArtifact(GeolocError):
    """An artifact (world, dataset, checkpoint, index, engine) does not match what loads it."""

"""Exceptions raised for problems the user can fix. The CLI prints them without a traceback."""


class JoDiffusionError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ConfigError(JoDiffusionError):
    """A config file, preset or override is invalid."""


class DatasetError(JoDiffusionError):
    """A dataset is missing, malformed or fails validation."""


class CheckpointError(JoDiffusionError):
    """A checkpoint or weight file is missing, incomplete or does not match the model."""

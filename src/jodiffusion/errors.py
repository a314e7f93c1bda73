"""Exceptions raised for problems the user can fix. The CLI prints them without a traceback."""


class JoDiffusionError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ConfigError(JoDiffusionError, ValueError):
    """A config file, preset, override or config value is invalid: the one type every config class raises
    (a ValueError too, so code that builds a config and catches ValueError keeps working)."""


class DatasetError(JoDiffusionError):
    """A dataset is missing, malformed or fails validation."""


class CheckpointError(JoDiffusionError):
    """A checkpoint or weight file is missing, incomplete or does not match the model."""

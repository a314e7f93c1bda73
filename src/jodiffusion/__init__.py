"""jodiffusion: generate labelled semantic-segmentation data by joint image-mask diffusion."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jodiffusion")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

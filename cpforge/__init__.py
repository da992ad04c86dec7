"""cpforge: reproducible CPython builds and images from one declarative matrix."""

__version__ = "0.1.0"

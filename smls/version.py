"""The version of smls, in a module of its own so that any part may read it without importing the package's registrations."""

__version__ = "0.1.0"

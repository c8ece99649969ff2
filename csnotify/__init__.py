"""csnotify: event publish/subscribe for Apache CloudStack."""

__version__ = "0.1.0"

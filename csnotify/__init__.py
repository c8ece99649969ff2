"""csnotify: event publish/subscribe for Apache CloudStack."""

__version__ = "0.1.0"
APP_NAME = "csnotify"  # the program, its config and data directories, its store file

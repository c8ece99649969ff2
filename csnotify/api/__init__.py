"""The HTTP API (``csnotify serve``): the subscription commands as JSON under ``/v1``, on
the same store and the same core functions as the CLI.

  bodies   request bodies: JSON types and known fields, into the core's input
  openapi  the OpenAPI 3.1 document served at /v1/openapi.json
  server   the aiohttp application: authentication, scope, problem+json, the routes

aiohttp is imported by ``serve`` only (``csnotify --help`` stays fast).
"""

"""A stand-in for a CloudStack management server, for trying csnotify on one machine:
the signed listEvents API and CloudStack-format RabbitMQ publishing, fed by a generator
of realistic events of all five categories (or a replayed file)."""

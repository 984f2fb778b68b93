"""The bundled async client (producer, consumer, admin) and the ``headwater`` command.

Speaks to brokers only through :mod:`protocol`; never imports :mod:`broker`.
"""

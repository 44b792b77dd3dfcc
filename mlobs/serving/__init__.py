"""Serving instrumentation: ASGI and WSGI middleware for model-serving HTTP apps."""

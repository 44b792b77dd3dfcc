"""The metric names serving middleware records (dashboards and alert rules read them).

Recorded into the spool like any metric: on ``/metrics`` each is served as ``mlobs_`` + the name
(``mlobs_http_server_requests_total``). Labels: ``model``, ``model_version``, ``route`` (the
route template, never the raw path, so cardinality stays bounded), ``method``, and where it
applies ``code`` (the HTTP status code) and ``error_class`` (``client``, ``server``, ``exception``).
"""

from __future__ import annotations

REQUESTS = "http_server_requests_total"
"""Counter: requests finished, ``{model, model_version, route, method, code}``."""
DURATION = "http_server_request_duration_seconds"
"""Histogram: request latency in seconds, ``{model, model_version, route, method}``."""
IN_FLIGHT = "http_server_active_requests"
"""Gauge: requests in progress, ``{model, model_version}``."""
ERRORS = "http_server_errors_total"
"""Counter: failed requests, ``{model, model_version, route, error_class}``."""
REQUEST_SIZE = "http_server_request_body_size_bytes"
"""Histogram: request payload size, ``{model, model_version, route}``."""
RESPONSE_SIZE = "http_server_response_body_size_bytes"
"""Histogram: response payload size, ``{model, model_version, route}``."""

"""The HTTP edge: the only package (with the app factory) that imports Flask.

routes, hook_request (400s), discovery, auth (client JWTs; jwks: key sets, audience: what aud may
name), arrival (the deadline counts from arrival), cors, error_handlers, request_log,
metrics, hooks (one call: record → decisions → cards), report (/report), fhir_models (R4B
validation of what we receive and emit), openapi.json.
"""

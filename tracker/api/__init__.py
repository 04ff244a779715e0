"""The HTTP API: the application, its edge, validation, the OpenAPI document, the operator's
endpoints and the web console.
"""

"""Wire schemas shared by the API, the CLI, the worker and the agent.

They are separate from the ORM models (``service.db.models``): these describe what crosses a
process boundary, and every field is documented for the OpenAPI schema.
"""

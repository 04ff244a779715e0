"""Operator queries and actions, shared by the CLI (`tracker ...`) and the web console's
`/admin/...` endpoints: each returns plain data; the callers print it or answer it as JSON."""

"""The gateway as a library: `from llm_gateway import create_gateway`.

A client of the same queue the HTTP API uses, above both rooms: it enqueues and waits as the API
does (`shared`), and given provider keys it runs in-process workers (`workers.runtime`). Nothing in
`shared`, `api` or `workers` imports it (`make lint` checks).
"""

from llm_gateway.gateway import Completion, Gateway, create_gateway

__all__ = ["Completion", "Gateway", "create_gateway"]

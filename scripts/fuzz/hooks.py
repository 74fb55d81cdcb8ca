"""The API fuzz's own check (scripts/fuzz-api.sh loads this file through SCHEMATHESIS_HOOKS).

The OpenAPI document carries every rule the gateway checks that a JSON Schema can say
(schemas/contract/src/rules.rs). A few rules it cannot say: a value that must name something that
exists, one that depends on the clock, one field bounded by another, a URL the HTTP parser must
read. A schema-valid request may be refused (422) for those, and only at the fields below; any
other 422 to a schema-valid request fails this check. docs/api.md lists the same exceptions.
"""

import re

import schemathesis

# Per operation: the JSON pointers a 422 may name when the request satisfied the schema.
_TASK = [
    r"/tool",  # no such tool in the catalog (unknown_tool)
    r"/arguments(/.*)?",  # the tool's own inputSchema (invalid_arguments)
    r"/agent",  # no such agent in the tenant
    r"/session_id",  # no live session with this id in the tenant
    r"/run_at",  # more than a year from now
    r"/callback/url",  # a target the callback policy refuses (an internal address, a host list)
    r"/callback",  # the tenant has no callback secrets configured
]
EXCEPTIONS = {
    "POST /api/v1/tasks": _TASK + [r"/idempotency_key"],  # header and body keys differ
    # Two tasks of one batch with the same idempotency key: no schema says "unique by field".
    "POST /api/v1/tasks/batch": [r"/tasks/\d+" + p for p in _TASK + [r"/idempotency_key"]],
    # The tool is the path's (an unknown one is still reported at /tool); no run_at here.
    "POST /api/v1/tools/{name}/call": [p for p in _TASK if p != r"/run_at"],
    "POST /api/v1/keys": [r"/role"],  # no such role in the gateway's configuration
    "PUT /api/v1/agents/{name}": [r"/name", r"/callback/url"],  # differs from the path's name
    "POST /api/v1/agents": [r"/callback/url"],  # a target the callback policy refuses
    "PUT /api/v1/config": [
        r"/config/queues/[^/]+/retry_initial_ms",  # above the longest retry delay
        r"/config/mcp_servers/[^/]+/url",  # not a URL the gateway's HTTP parser reads
        r"/config/mcp_servers/[^/]+",  # a server a worker serves from its own file
        r"/config/hooks/[^/]+/secrets/\d+",  # not base64 of 24 to 64 bytes
        r"/config/hooks/[^/]+/tool",  # no such tool in the catalog
        r"/config/hooks/[^/]+/arguments",  # a required argument of the tool left unmapped
        r"/config/hooks/[^/]+/agent",  # no such agent in the tenant, or it forbids the tool
        r"/config/callbacks/[^/]+/secrets/\d+",  # not base64 of 24 to 64 bytes
        r"/config/callbacks/[^/]+/default/url",  # a target the callback policy refuses
    ],
}


@schemathesis.check
def refused_only_for_state(ctx, response, case):
    """A schema-valid request is refused with 422 only at a documented exception."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    pointers = [e.get("pointer", "") for e in problem.get("errors", [])] or [""]
    allowed = EXCEPTIONS.get(case.operation.label, [])
    outside = [p for p in pointers if not any(re.fullmatch(a, p) for a in allowed)]
    if outside:
        raise AssertionError(
            f"a schema-valid request was refused at {', '.join(outside) or '(no field)'}: "
            f"{problem.get('detail', response.text[:300])}"
        )
    return None

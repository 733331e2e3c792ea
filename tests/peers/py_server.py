"""A real upstream for tests/gateway.rs: an MCP server on the official Python SDK (both eras).

usage: py_server.py PORT NAME GATE_FILE [HOST,...]
HOST: more Host headers to accept besides 127.0.0.1 and localhost (the SDK's DNS-rebinding
protection), e.g. `cold.tools.svc:*` for a container server's Service name.
Tools: echo, add, whoami (names the server), fail (a tool error: isError), delete_everything
(kept out by allow lists), wait_for_gate (reports progress, then waits until GATE_FILE exists).
"""

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

port, name, gate = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = MCPServer(name)


@server.tool()
def echo(text: str) -> str:
    """Echoes the text, prefixed with the server's name."""
    return f"{name}: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def whoami() -> str:
    """The server's name."""
    return name


@server.tool()
def fail() -> str:
    """Always fails, as a tool error."""
    raise ToolError("this tool always fails")


@server.tool()
def delete_everything() -> str:
    """A tool no allow list should let through."""
    return "deleted everything"


@server.tool()
async def wait_for_gate(ctx: Context) -> str:
    """Reports progress, then waits for the gate file."""
    await ctx.report_progress(1, 2, "waiting for the gate")
    while not os.path.exists(gate):
        await asyncio.sleep(0.05)
    return "gate opened"


extra_hosts = [h for h in sys.argv[4].split(",") if h] if len(sys.argv) > 4 else []
security = None
if extra_hosts:
    security = TransportSecuritySettings(
        allowed_hosts=["127.0.0.1:*", "localhost:*", *extra_hosts],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*"],
    )
server.run(transport="streamable-http", host="127.0.0.1", port=port, transport_security=security)

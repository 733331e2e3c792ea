"""A dual-revision MCP server built with the official Python SDK (`mcp` 2.3), for interop tests.

Serves, on 127.0.0.1 and a free port (printed as `PORT <n>` on stdout):
  /paged/mcp    lowlevel Server, stateful streamable HTTP: the 2025 handshake revisions and
                2026-07-28 (routed by the SDK on MCP-Protocol-Version); `tools/list` pages
                TOOLS tools by PAGE_SIZE through `nextCursor`.
  /plain/mcp    a Server without the tools capability.
  /log          JSON: every request seen (path, HTTP method, MCP-Protocol-Version, Mcp-Method).
Exits when stdin closes (the test process holding it ended).
"""

import os
import socket
import sys
import threading

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

TOOLS = [f"py-tool-{i:02d}" for i in range(7)]
PAGE_SIZE = 3
LOG = []


async def list_tools(ctx, params):
    start = int(params.cursor) if params is not None and params.cursor else 0
    page = TOOLS[start : start + PAGE_SIZE]
    following = start + PAGE_SIZE
    return types.ListToolsResult(
        tools=[types.Tool(name=name, description="a paged tool", input_schema={"type": "object"}) for name in page],
        next_cursor=str(following) if following < len(TOOLS) else None,
    )


async def call_tool(ctx, params):
    return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])


paged = Server("py-paged", version="2.3.0", on_list_tools=list_tools, on_call_tool=call_tool)
plain = Server("py-plain", version="2.3.0")
security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
paged_app = paged.streamable_http_app(streamable_http_path="/mcp", transport_security=security)
plain_app = plain.streamable_http_app(streamable_http_path="/mcp", transport_security=security)


class Logged:
    """ASGI middleware recording what each request asked for."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            LOG.append(
                {
                    "path": scope["path"],
                    "http": scope["method"],
                    "protocol": headers.get("mcp-protocol-version"),
                    "method": headers.get("mcp-method"),
                }
            )
        await self.app(scope, receive, send)


async def log(_request):
    return JSONResponse(LOG)


async def main():
    app = Starlette(
        routes=[Route("/log", log), Mount("/paged", app=Logged(paged_app)), Mount("/plain", app=Logged(plain_app))]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    async with paged.session_manager.run(), plain.session_manager.run():
        await uvicorn.Server(config).serve(sockets=[sock])


def exit_with_parent():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_with_parent, daemon=True).start()
    anyio.run(main)

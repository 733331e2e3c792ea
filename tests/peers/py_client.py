"""A real client for tests/gateway.rs: the official Python SDK's Client, through the gateway.

usage: py_client.py URL MODE SCENARIO   (MODE: legacy or 2026-07-28)
Prints one JSON object with what the scenario saw. With MCP_BEARER_TOKEN set, every request
carries Authorization: Bearer <it>.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def target(url):
    """The URL, or a transport sending the bearer token of MCP_BEARER_TOKEN."""
    token = os.environ.get("MCP_BEARER_TOKEN")
    if not token:
        return url
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=300))
    return streamable_http_client(url, http_client=http)


def text_of(result):
    return [block.text for block in result.content if getattr(block, "text", None) is not None]


async def policy(client):
    out = {"protocol": client.protocol_version}
    listed = await client.list_tools()
    out["tools"] = sorted(tool.name for tool in listed.tools)
    echo = await client.call_tool("echo", {"text": "hi"})
    out["echo"] = text_of(echo)
    out["echo_is_error"] = bool(echo.is_error)
    failed = await client.call_tool("fail", {})
    out["fail_is_error"] = bool(failed.is_error)
    try:
        denied = await client.call_tool("delete_everything", {})
        out["denied"] = {"result": text_of(denied), "is_error": bool(denied.is_error)}
    except MCPError as e:
        out["denied"] = {"code": e.code, "message": e.message}
    return out


async def pinned(client):
    out = {"protocol": client.protocol_version, "whoami": []}
    for _ in range(6):
        out["whoami"].append(text_of(await client.call_tool("whoami", {}))[0])
    return out


async def main():
    url, mode, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
    async with Client(target(url), mode=mode, read_timeout_seconds=30) as client:
        out = await {"policy": policy, "pinned": pinned}[scenario](client)
    print(json.dumps(out))


asyncio.run(main())

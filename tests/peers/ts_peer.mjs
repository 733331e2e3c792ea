// A real peer for tests/gateway.rs on the official TypeScript SDK (@modelcontextprotocol/sdk).
//   node ts_peer.mjs server PORT NAME   streamable HTTP with sessions on 127.0.0.1:PORT/mcp
//                                       (tools: echo, fail (isError), delete_everything)
//   node ts_peer.mjs client URL         lists tools, calls echo and delete_everything, ends the
//                                       session; prints one JSON object; with MCP_BEARER_TOKEN set,
//                                       every request carries Authorization: Bearer <it>
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const [mode, ...args] = process.argv.slice(2);

function mcpServer(name) {
  const server = new McpServer({ name, version: "1.0.0" });
  server.registerTool("echo", { description: "Echoes", inputSchema: { text: z.string() } }, async ({ text }) => ({
    content: [{ type: "text", text: `${name}: ${text}` }],
  }));
  server.registerTool("fail", { description: "A tool error" }, async () => ({
    content: [{ type: "text", text: "failed" }],
    isError: true,
  }));
  server.registerTool("delete_everything", { description: "Kept out by allow lists" }, async () => ({
    content: [{ type: "text", text: "deleted everything" }],
  }));
  return server;
}

async function serve(port, name) {
  const sessions = new Map();
  const http = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const id = req.headers["mcp-session-id"];
    let transport = id ? sessions.get(id) : undefined;
    if (!transport) {
      if (id || body?.method !== "initialize") {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sid) => sessions.set(sid, transport),
      });
      transport.onclose = () => sessions.delete(transport.sessionId);
      await mcpServer(name).connect(transport);
    }
    await transport.handleRequest(req, res, body);
  });
  http.listen(port, "127.0.0.1");
}

async function client(url) {
  const client = new Client({ name: "gateway-test", version: "1.0.0" });
  const token = process.env.MCP_BEARER_TOKEN;
  const options = token ? { requestInit: { headers: { Authorization: `Bearer ${token}` } } } : undefined;
  const transport = new StreamableHTTPClientTransport(new URL(url), options);
  await client.connect(transport);
  const out = { protocol: transport.protocolVersion };
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const echo = await client.callTool({ name: "echo", arguments: { text: "hi" } });
  out.echo = echo.content.map((c) => c.text);
  out.fail_is_error = (await client.callTool({ name: "fail", arguments: {} })).isError === true;
  try {
    const denied = await client.callTool({ name: "delete_everything", arguments: {} });
    out.denied = { result: denied.content.map((c) => c.text) };
  } catch (e) {
    out.denied = { code: e.code, message: e.message };
  }
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify(out));
}

if (mode === "server") await serve(Number(args[0]), args[1]);
else if (mode === "client") await client(args[0]);
else throw new Error(`unknown mode ${mode}`);

// MCP servers built with the official TypeScript SDKs, for interop tests. Run from the peers
// install root (.tools/peers, where node_modules is). Listens on 127.0.0.1 and a free port,
// printed as `PORT <n>` on stdout. Endpoints:
//   /modern           @modelcontextprotocol/server 2.x, createMcpHandler({legacy: 'reject'}):
//                     2026-07-28 only; MODERN_TOOLS tools.
//   /dual             @modelcontextprotocol/server 2.x, createMcpHandler(): 2026-07-28 and
//                     the stateless 2025 fallback; DUAL_TOOLS tools.
//   /handshake        @modelcontextprotocol/sdk 1.x, stateful streamable HTTP (2025-11-25 and
//                     older, sessions); HANDSHAKE_TOOLS tools.
//   /handshake-error  the same, but tools/list fails with JSON-RPC error -32050.
//   /handshake-hang   the same, but tools/list never answers (also /handshake-cancel).
//   /sse, /message    @modelcontextprotocol/server-everything over the HTTP+SSE transport.
//   /state            JSON: open sessions per endpoint, the request log, the tools the last
//                     server-everything instance registered.
// Exits when stdin closes (the test process holding it ended).
import http from 'node:http';

import { createMcpHandler, McpServer as McpServerV2 } from '@modelcontextprotocol/server';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { ListToolsRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import { createServer as createEverything } from '@modelcontextprotocol/server-everything/dist/server/index.js';

const MODERN_TOOLS = ['modern-alpha', 'modern-beta', 'modern-gamma'];
const DUAL_TOOLS = ['dual-one', 'dual-two'];
const HANDSHAKE_TOOLS = ['hs-a', 'hs-b', 'hs-c', 'hs-d'];

const ok = async () => ({ content: [{ type: 'text', text: 'ok' }] });

function v2Factory(name, tools) {
  return () => {
    const server = new McpServerV2({ name, version: '2.4.0' });
    for (const tool of tools) server.registerTool(tool, { description: `tool ${tool}` }, ok);
    return server;
  };
}

const modern = createMcpHandler(v2Factory('ts-modern', MODERN_TOOLS), { legacy: 'reject' });
const dual = createMcpHandler(v2Factory('ts-dual', DUAL_TOOLS));

const log = [];
const sessions = {
  handshake: new Map(),
  'handshake-error': new Map(),
  'handshake-hang': new Map(),
  'handshake-cancel': new Map(),
  sse: new Map(),
};
let everythingTools = [];

function handshakeServer(kind) {
  if (kind === 'handshake') {
    const server = new McpServer({ name: 'ts-handshake', version: '1.32.2' });
    for (const tool of HANDSHAKE_TOOLS) server.registerTool(tool, { description: `tool ${tool}` }, ok);
    return server.server;
  }
  const server = new Server({ name: `ts-${kind}`, version: '1.32.2' }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => {
    if (kind === 'handshake-error') throw new McpError(-32050, 'tools are on fire');
    return new Promise(() => {});
  });
  return server;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function serveFetch(handler, req, res, body) {
  const headers = new Headers();
  for (const [key, value] of Object.entries(req.headers)) {
    if (Array.isArray(value)) value.forEach((v) => headers.append(key, v));
    else if (value !== undefined) headers.set(key, value);
  }
  const hasBody = !['GET', 'HEAD', 'DELETE'].includes(req.method);
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method,
    headers,
    body: hasBody ? body : undefined,
  });
  const response = await handler.fetch(request);
  res.writeHead(response.status, Object.fromEntries(response.headers));
  if (response.body) for await (const chunk of response.body) res.write(chunk);
  res.end();
}

async function serveHandshake(kind, req, res, body) {
  const open = sessions[kind];
  const id = req.headers['mcp-session-id'];
  const parsed = body.length ? JSON.parse(body.toString()) : undefined;
  let transport = id ? open.get(id) : undefined;
  if (!transport) {
    if (id || req.method !== 'POST' || parsed?.method !== 'initialize') {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: No valid session ID provided' }, id: null }));
      return;
    }
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => crypto.randomUUID(),
      onsessioninitialized: (sid) => open.set(sid, transport),
      onsessionclosed: (sid) => open.delete(sid),
    });
    transport.onclose = () => transport.sessionId && open.delete(transport.sessionId);
    await handshakeServer(kind).connect(transport);
  }
  await transport.handleRequest(req, res, parsed);
}

async function serveSse(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/sse') {
    const { server, cleanup } = createEverything();
    const transport = new SSEServerTransport('/message', res);
    sessions.sse.set(transport.sessionId, transport);
    server.server.onclose = () => {
      everythingTools = Object.entries(server._registeredTools).filter(([, t]) => t.enabled !== false).map(([n]) => n);
      sessions.sse.delete(transport.sessionId);
      cleanup(transport.sessionId);
    };
    await server.connect(transport);
    const registered = () => Object.entries(server._registeredTools).filter(([, t]) => t.enabled !== false).map(([n]) => n);
    server.server.oninitialized = ((previous) => async () => {
      await previous?.();
      everythingTools = registered();
    })(server.server.oninitialized);
    return;
  }
  const transport = sessions.sse.get(url.searchParams.get('sessionId'));
  if (!transport) {
    res.writeHead(404).end();
    return;
  }
  await transport.handlePostMessage(req, res);
}

const httpServer = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    const path = url.pathname;
    if (path === '/state') {
      const open = Object.fromEntries(Object.entries(sessions).map(([k, m]) => [k, m.size]));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ open, log, everythingTools }));
      return;
    }
    if (path === '/sse' || path === '/message') {
      log.push({ path, http: req.method });
      await serveSse(req, res, url);
      return;
    }
    const body = await readBody(req);
    let method;
    try {
      method = JSON.parse(body.toString()).method;
    } catch {}
    log.push({ path, http: req.method, method, protocol: req.headers['mcp-protocol-version'], mcpMethod: req.headers['mcp-method'] });
    if (path === '/modern') return await serveFetch(modern, req, res, body);
    if (path === '/dual') return await serveFetch(dual, req, res, body);
    if (path.slice(1) in sessions) return await serveHandshake(path.slice(1), req, res, body);
    res.writeHead(404).end();
  } catch (error) {
    console.error(error);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  }
});

// The test process holds stdin open: when it exits, so does this server.
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();

httpServer.listen(0, '127.0.0.1', () => {
  console.log(`PORT ${httpServer.address().port}`);
});

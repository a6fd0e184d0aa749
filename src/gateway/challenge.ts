/**
 * auth_required, by channel: how the gateway tells an agent that the user
 * must authorize an upstream at its own authorization server, in the best form the agent
 * understands.
 *
 * - `elicitation` — JSON-RPC error `-32042` (URLElicitationRequiredError, MCP 2025-11-25
 *   client/elicitation) with `data.elicitations: [{ mode: "url", elicitationId, url, message }]`;
 * - `tool_result` — for `tools/call`: a CallToolResult with `isError: true`, a text naming the URL,
 *   and `structuredContent: { status: "auth_required", auth_url, server_name, message }`;
 * - `reauthorize` — HTTP 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="<granted>
 *   <connect scope>", resource_metadata=…`: the step-up (MCP 2025-11-25 authorization §"Scope
 *   Challenge Handling") that OAuth clients answer by authorizing again for the larger scope;
 * - `jsonrpc_error` — any other request: JSON-RPC error {@link AUTH_REQUIRED_RPC_CODE} with the
 *   request's id and the auth_required object in `data`;
 * - `held_stream` — a GET (the agent's notification stream): the gateway answers the stream
 *   itself and keeps it open until the user has connected, then writes
 *   `notifications/elicitation/complete` and ends it, so the agent reconnects to the upstream.
 *
 * JSON-RPC errors travel with HTTP 200 and `application/json`: the Streamable HTTP transport
 * reads a JSON-RPC body only from a 2xx response (the SDK client turns any other status into a
 * transport error and never sees `-32042`). A JSON answer is always allowed because the agent
 * must accept both `application/json` and `text/event-stream` on POST.
 */
import type { ServerResponse } from 'node:http';
import { resourceMetadataUrl } from '../authserver/tokens/challenge.ts';
import type { Principal, Reply } from '../credentials/types.ts';
import type { RequestContext } from '../http/router.ts';
import type { AuthRequired } from '../upstream-oauth/auth-required.ts';
import { formatBearerChallenge } from '../upstream-oauth/www-authenticate.ts';
import type { ClientCapabilities, ClientSessionInfo } from './client-capabilities.ts';
import type { RpcInfo } from './jsonrpc.ts';
import type { SseSink, StreamRegistry } from './stream-registry.ts';
import type { Upstream } from './upstream.ts';

/** The per-upstream `auth.challenge` setting. */
export type ChallengeSetting = 'auto' | 'elicitation' | 'tool_result' | 'reauthorize';

/** The channel an auth_required answer was actually sent through. */
export type ChallengeChannel = 'elicitation' | 'tool_result' | 'reauthorize' | 'jsonrpc_error' | 'held_stream';

/** MCP 2025-11-25 `URL_ELICITATION_REQUIRED`. */
export const URL_ELICITATION_REQUIRED = -32042;

/**
 * Our JSON-RPC code for "authorization at an upstream is required" on requests that are neither
 * elicitation-capable nor `tools/call`. In the implementation-defined server range
 * (-32000..-32099) and distinct from the SDK's own (-32000 connection closed, -32001 request
 * timeout), MCP's -32002 (resource not found) and -32042.
 */
export const AUTH_REQUIRED_RPC_CODE = -32003;

/** The auth_required object carried by the tool result and the JSON-RPC error (issue 5). */
export interface AuthRequiredData {
  status: 'auth_required';
  auth_url: string;
  server_name: string;
  message: string;
}

/** What decides the channel. */
export interface ChannelInput {
  setting: ChallengeSetting;
  /** The HTTP method of the agent's request. */
  method: string;
  rpc: RpcInfo | undefined;
  mcpSessionId: string | undefined;
  /** What the agent declared at initialize, if this session is known. */
  session: ClientSessionInfo | undefined;
}

/**
 * Picks the channel (issue 5 "auth_required, by channel"):
 * - a GET within a session → `held_stream` (unless the setting is `reauthorize`); a GET without one,
 *   a DELETE, a notification, a response or a batch → `reauthorize` (nothing else can carry it);
 * - `elicitation` / `reauthorize` → themselves; `tool_result` → itself for `tools/call`, else `jsonrpc_error`;
 * - `auto` → `reauthorize` for `initialize` (no session yet), else `elicitation` when the session's
 *   client declared `elicitation.url`, else `tool_result` for `tools/call`, else `jsonrpc_error`.
 */
export function chooseChannel(input: ChannelInput): ChallengeChannel {
  const { setting, method, rpc, mcpSessionId, session } = input;
  if (method === 'GET') return mcpSessionId && setting !== 'reauthorize' ? 'held_stream' : 'reauthorize';
  if (method !== 'POST' || rpc === undefined || rpc.id === undefined || rpc.method === undefined) return 'reauthorize';
  const isToolCall = rpc.method === 'tools/call';
  switch (setting) {
    case 'elicitation':
    case 'reauthorize':
      return setting;
    case 'tool_result':
      return isToolCall ? 'tool_result' : 'jsonrpc_error';
    case 'auto':
      // No session yet: the HTTP step-up is the one channel every OAuth client acts on.
      if (rpc.method === 'initialize') return 'reauthorize';
      if (session?.elicitationUrl) return 'elicitation';
      if (isToolCall) return 'tool_result';
      return 'jsonrpc_error';
  }
}

/** What {@link authRequiredReply} needs. */
export interface ReplyInput {
  channel: Exclude<ChallengeChannel, 'held_stream'>;
  upstream: Pick<Upstream, 'name' | 'resource'>;
  rpcId: string | number | undefined;
  principal: Principal | undefined;
  authRequired: AuthRequired;
}

/** The data object shared by the tool result and the JSON-RPC error. */
export function authRequiredData(authRequired: AuthRequired): AuthRequiredData {
  return { status: 'auth_required', auth_url: authRequired.authUrl, server_name: authRequired.upstream, message: authRequired.message };
}

/** The answer for every channel but `held_stream`, as a complete HTTP response. */
export function authRequiredReply(input: ReplyInput): Reply {
  const { channel, authRequired, rpcId } = input;
  const data = authRequiredData(authRequired);
  const json = (status: number, body: unknown, extra: Record<string, string> = {}): Reply => ({
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...extra },
    body: JSON.stringify(body),
  });
  switch (channel) {
    case 'elicitation':
      return json(200, {
        jsonrpc: '2.0',
        id: rpcId ?? null,
        error: {
          code: URL_ELICITATION_REQUIRED,
          message: authRequired.message,
          data: { elicitations: [{ mode: 'url', elicitationId: authRequired.elicitationId, url: authRequired.authUrl, message: authRequired.message }] },
        },
      });
    case 'tool_result':
      return json(200, {
        jsonrpc: '2.0',
        id: rpcId ?? null,
        result: {
          content: [{ type: 'text', text: `Authorization required for ${authRequired.upstream}: open ${authRequired.authUrl} and then retry.` }],
          isError: true,
          structuredContent: data,
        },
      });
    case 'jsonrpc_error':
      return json(200, {
        jsonrpc: '2.0',
        id: rpcId ?? null,
        error: { code: AUTH_REQUIRED_RPC_CODE, message: authRequired.message, data: { ...data, elicitationId: authRequired.elicitationId } },
      });
    case 'reauthorize': {
      // The agent's new authorization request asks for exactly this scope (SDK: `scope` from the
      // challenge), so it must keep what was granted and add the connect scope.
      const scope = [...new Set([...(input.principal?.scopes ?? []), authRequired.connectScope])];
      const challenge = formatBearerChallenge({
        resourceMetadata: resourceMetadataUrl(input.upstream.resource),
        scope,
        error: 'insufficient_scope',
        errorDescription: `authorization for ${authRequired.upstream} is required`,
      });
      return json(
        403,
        { jsonrpc: '2.0', id: rpcId ?? null, error: { code: AUTH_REQUIRED_RPC_CODE, message: authRequired.message, data: { ...data, error: 'insufficient_scope' } } },
        { 'www-authenticate': challenge },
      );
    }
  }
}

/** Options of {@link createAuthRequiredRenderer}. */
export interface AuthRequiredRendererOptions {
  capabilities: ClientCapabilities;
  streams: StreamRegistry;
  /** The `auth.challenge` of an upstream (`auto` for modes that have none). */
  settingFor(upstream: string): ChallengeSetting;
  /**
   * How long a held GET stream stays open without the user connecting, in milliseconds; then it
   * ends and the agent's reconnection re-evaluates. Default 600000 (the 10-minute life of an
   * upstream authorization state).
   */
  heldStreamMs?: number;
  /** SSE comment interval on held streams, in milliseconds; off when absent. */
  sseKeepAliveMs?: number;
  /**
   * Called before a `reauthorize` answer goes out for a signed-in session, with the connect scope
   * it asks for (the app marks the session so its refreshes are refused until it authorizes again: step-up.ts).
   */
  onReauthorize?(principal: Principal, scopes: string[]): Promise<void>;
  /** Aborted when the gateway shuts down: held streams end at once (they hold whole events only), and the agent reconnects elsewhere. */
  drain?: AbortSignal;
}

/** What the gateway path hands the renderer. */
export interface RenderInput {
  ctx: RequestContext;
  upstream: Upstream;
  rpc: RpcInfo | undefined;
  mcpSessionId: string | undefined;
  principal: Principal | undefined;
  authRequired: AuthRequired;
}

/** Renders auth_required on the agent's response. */
export interface AuthRequiredRenderer {
  /** Writes the answer (the chosen channel is also put in the access log as `authRequired`); resolves when written. */
  render(input: RenderInput): Promise<ChallengeChannel>;
}

/** Builds the renderer; see the module comment for the channels. */
export function createAuthRequiredRenderer(options: AuthRequiredRendererOptions): AuthRequiredRenderer {
  const heldStreamMs = options.heldStreamMs ?? 600_000;
  if (!Number.isSafeInteger(heldStreamMs) || heldStreamMs <= 0) throw new TypeError('heldStreamMs must be a positive integer');

  return {
    async render({ ctx, upstream, rpc, mcpSessionId, principal, authRequired }) {
      // Read from the store, whichever replica saw initialize; a store failure rejects (503), never a guessed channel.
      const session = await options.capabilities.get({ upstream: upstream.name, mcpSessionId, sessionId: principal?.sessionId }, ctx.signal);
      const channel = chooseChannel({ setting: options.settingFor(upstream.name), method: ctx.req.method ?? 'GET', rpc, mcpSessionId, session });
      ctx.log.authRequired = channel;
      if (channel === 'held_stream') {
        holdStream(ctx.res, ctx.signal, {
          register: (sink) =>
            options.streams.register({
              upstream: upstream.name,
              mcpSessionId: mcpSessionId!,
              sessionId: principal?.sessionId,
              protocolVersion: headerValue(ctx.req.headers['mcp-protocol-version']) ?? session?.protocolVersion,
              sink,
            }),
          lifetimeMs: heldStreamMs,
          keepAliveMs: options.sseKeepAliveMs,
          drain: options.drain,
        });
        return channel;
      }
      // Even when the grant already has the connect scope (the upstream token was lost since):
      // only a new authorization, chained through the upstream, connects the session again.
      if (channel === 'reauthorize' && principal) await options.onReauthorize?.(principal, [authRequired.connectScope]);
      const reply = authRequiredReply({ channel, upstream, rpcId: rpc?.id, principal, authRequired });
      ctx.res.writeHead(reply.status, { ...reply.headers, 'content-length': Buffer.byteLength(reply.body) });
      ctx.res.end(reply.body);
      return channel;
    },
  };
}

/**
 * Answers a GET with an SSE stream of our own that carries nothing until the user has connected:
 * then the completion notification is written and the stream ends. It also ends when the agent
 * leaves or after `lifetimeMs`.
 */
function holdStream(
  res: ServerResponse,
  signal: AbortSignal,
  options: { register(sink: SseSink): () => void; lifetimeMs: number; keepAliveMs: number | undefined; drain: AbortSignal | undefined },
): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  res.flushHeaders();
  const timers: NodeJS.Timeout[] = [];
  const end = () => {
    for (const t of timers) clearTimeout(t);
    unregister();
    signal.removeEventListener('abort', end);
    options.drain?.removeEventListener('abort', end);
    if (!res.writableEnded && !res.destroyed) res.end();
  };
  const unregister = options.register({
    deliver(event) {
      if (res.writableEnded || res.destroyed) return;
      res.write(event);
      end();
    },
  });
  signal.addEventListener('abort', end, { once: true });
  if (options.drain?.aborted) return end();
  options.drain?.addEventListener('abort', end, { once: true });
  res.once('close', end);
  const lifetime = setTimeout(end, options.lifetimeMs);
  lifetime.unref();
  timers.push(lifetime);
  if (options.keepAliveMs) {
    const keepAlive = setInterval(() => {
      if (!res.writableEnded) res.write(': keep-alive\n\n');
    }, options.keepAliveMs);
    keepAlive.unref();
    timers.push(keepAlive);
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The audit's view of a forwarded answer (forward.ts `observe`): the upstream status and the
 * request's outcome as soon as the head passes, so the access-log line can be written before
 * `forward` resolves, and for `tools/list` and `tools/call` a tap that reads the tool names and the
 * error flag as the bytes stream by, never delaying one.
 */
import type { RequestContext } from '../http/router.ts';
import type { McpExchange, McpRoute } from './mcp-exchange.ts';
import { createRpcResponseTap, type ResponseObserver } from './response-tap.ts';

/** Most bytes of one `tools/list` answer read for tool names, and of a `tools/call` answer for its error flag. */
const TAP_BYTES = { list: 1024 * 1024, call: 256 * 1024 };

/** The observer of one forwarded answer: see the module comment. */
export function observerFor(route: McpRoute, x: McpExchange): ResponseObserver {
  const { ctx, rpc, upstream } = x;
  const head = (status: number) => noteStatus(ctx, status);
  const method = rpc?.id !== undefined ? rpc.method : undefined;
  const catalog = route.toolCatalog;
  if (method === 'tools/list' && catalog) {
    const tap = createRpcResponseTap({
      maxBytes: TAP_BYTES.list,
      onMessage: (m) => {
        if (m.id === rpc!.id && 'result' in m) catalog.learn(upstream.name, m.result);
      },
    });
    return { head: (status, headers) => (head(status), tap.head(status, headers)), data: tap.data, end: tap.end };
  }
  if (method === 'tools/call') {
    const tap = createRpcResponseTap({
      maxBytes: TAP_BYTES.call,
      // Only an answer naming `error` or `isError` can be a tool error: the others are not parsed.
      mentions: ['"error"', '"isError"'],
      onMessage: (m) => {
        if (m.id !== rpc!.id) return;
        const result = m.result as { isError?: unknown } | undefined;
        if ('error' in m || result?.isError === true) ctx.log.outcome = 'tool_error';
      },
    });
    return { head: (status, headers) => (head(status), tap.head(status, headers)), data: tap.data, end: tap.end };
  }
  return { head, data: noop, end: noop };
}

/**
 * Counts a `tools/call` in the tool-call metric, by the outcome the request ended with. Called
 * once the request is answered (or failed), whatever path it took: the handler's end, so no
 * listener per request waits for the response's 'close'.
 */
export function countToolCall(route: McpRoute, x: McpExchange, toolName: string): void {
  const { upstream } = x;
  route.metrics.toolCalls.inc({ upstream: upstream.name, tool: route.toolCatalog?.label(upstream.name, toolName) ?? 'other', outcome: String(x.ctx.log.outcome ?? 'error') });
}

/** The upstream status and the outcome it means, in the access log. */
function noteStatus(ctx: RequestContext, status: number): void {
  ctx.log.upstreamStatus = status;
  ctx.log.outcome = status < 400 ? 'ok' : 'upstream_error';
}

function noop(): void {}

/**
 * The audit's view of a forwarded answer (forward.ts `observe`): the upstream status and the
 * request's outcome as soon as the head passes, so the access-log line can be written before
 * `forward` resolves, and for `tools/list` and `tools/call` a tap that reads the tool names and the
 * error flag as the bytes stream by, never delaying one.
 */
import type { RequestContext } from '../http/router.ts';
import type { McpExchange, McpRoute } from './mcp-exchange.ts';
import type { IncomingHttpHeaders } from 'node:http';
import { RpcResponseTap, type ResponseObserver } from './response-tap.ts';

/** Most bytes of one `tools/list` answer read for tool names, and of a `tools/call` answer for its error flag. */
const TAP_BYTES = { list: 1024 * 1024, call: 256 * 1024 };

/** The observer of one forwarded answer: see the module comment. */
export function observerFor(route: McpRoute, x: McpExchange): ResponseObserver {
  const { ctx, rpc, upstream } = x;
  const method = rpc?.id !== undefined ? rpc.method : undefined;
  const catalog = route.toolCatalog;
  if (method === 'tools/list' && catalog) {
    return new AnswerObserver(ctx, TAP_BYTES.list, (m) => {
      if (m.id === rpc!.id && 'result' in m) catalog.learn(upstream.name, m.result);
    });
  }
  if (method === 'tools/call') {
    // Only an answer naming one of these keys can be a tool error: the others are not parsed.
    return new AnswerObserver(ctx, TAP_BYTES.call, (m) => {
      if (m.id !== rpc!.id) return;
      const result = m.result as { isError?: unknown } | undefined;
      if ('error' in m || result?.isError === true) ctx.log.outcome = 'tool_error';
    }, ['"error"', '"isError"']);
  }
  return new AnswerObserver(ctx);
}

/**
 * Notes the status and outcome from the head and, for the answers the audit reads, hands the body
 * to a response tap. One object per answer with shared methods (closures per answer cost an
 * allocation each).
 */
class AnswerObserver implements ResponseObserver {
  readonly #ctx: RequestContext;
  readonly #tap: RpcResponseTap | undefined;

  constructor(ctx: RequestContext, maxBytes?: number, onMessage?: (message: Record<string, unknown>) => void, mentions?: readonly string[]) {
    this.#ctx = ctx;
    this.#tap = onMessage ? new RpcResponseTap(maxBytes!, onMessage, mentions) : undefined;
  }

  head(status: number, headers: IncomingHttpHeaders): void {
    noteStatus(this.#ctx, status);
    this.#tap?.head(status, headers);
  }

  data(chunk: Buffer): void {
    this.#tap?.data(chunk);
  }

  end(): void {
    this.#tap?.end();
  }
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


/**
 * An upstream's 401 (or 403 `insufficient_scope`), held back by forward.ts before any byte reached
 * the agent, and what the upstream's credential source makes of it: try again with a fresh
 * credential, tell the agent the user must authorize (auth_required, by channel), answer with a
 * reply of its own, or pass the upstream's answer on.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { BadGateway } from '../http/errors.ts';
import type { UpstreamRejection } from '../credentials/types.ts';
import { AuthRequiredError } from '../upstream-oauth/auth-required.ts';
import type { McpExchange, McpRoute } from './mcp-exchange.ts';

/** An upstream 401, or a 403 whose challenge says `insufficient_scope` (step-up): held for the credential source. */
export function isAuthRejection(status: number, headers: IncomingHttpHeaders): boolean {
  if (status === 401) return true;
  if (status !== 403) return false;
  const challenge = headers['www-authenticate'];
  return challenge !== undefined && /insufficient_scope/i.test(String(challenge));
}

/**
 * Answers a held rejection as the credential source decides; `retry` when the request should be
 * sent again with a fresh credential (first attempt only: a second refusal is a 502).
 */
export async function handleRejection(route: McpRoute, x: McpExchange, rejection: UpstreamRejection, attempt: number): Promise<'retry' | 'answered'> {
  const { ctx, upstream } = x;
  ctx.log.upstreamStatus = rejection.status;
  ctx.log.outcome = 'upstream_error';
  const decision = await upstream.credentials.rejected(x, rejection, attempt);
  switch (decision.action) {
    case 'retry':
      if (attempt === 0) return 'retry';
      throw new BadGateway(`upstream "${upstream.name}" refused the credential again after a refresh`);
    case 'respond':
      await answerAuthRequired(route, x, decision.error);
      return 'answered';
    case 'reply':
      ctx.res.writeHead(decision.reply.status, { ...decision.reply.headers, 'content-length': Buffer.byteLength(decision.reply.body) });
      ctx.res.end(decision.reply.body);
      return 'answered';
    case 'pass': {
      const { status, headers, body: held } = rejection;
      ctx.res.writeHead(status, { 'content-type': String(headers['content-type'] ?? 'application/json'), 'content-length': held.length });
      ctx.res.end(held);
      return 'answered';
    }
  }
}

/** auth_required goes to the agent by channel; anything else is thrown as it was. */
export async function answerAuthRequired(route: McpRoute, x: McpExchange, error: unknown): Promise<void> {
  if (!(error instanceof AuthRequiredError) || !route.authRequired) throw error;
  x.ctx.log.outcome = 'auth_required';
  await route.authRequired.render({ ctx: x.ctx, upstream: x.upstream, rpc: x.rpc, mcpSessionId: x.mcpSessionId, principal: x.principal, authRequired: error.authRequired });
}

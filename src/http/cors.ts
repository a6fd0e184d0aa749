import type { RequestContext } from './router.ts';

/**
 * Answers a CORS preflight for a public OAuth endpoint (token, revocation): browser-based MCP
 * clients (the Inspector) call them cross-origin. Any origin may ask; the endpoints authenticate
 * the client themselves and set no cookies, so allowing `*` grants nothing ambient.
 */
export function answerOAuthPreflight(ctx: RequestContext): void {
  ctx.res.writeHead(204, {
    'access-control-allow-origin': '*',
    'access-control-allow-methods': 'POST',
    'access-control-allow-headers': 'authorization, content-type',
    'access-control-max-age': '600',
  });
  ctx.res.end();
}

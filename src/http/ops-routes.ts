import type { Registry } from '../observability/metrics.ts';
import type { Route } from './router.ts';

/** A readiness check: resolves when its part (the store, the signing keys) can serve. */
export type ReadinessCheck = { name: string; check(signal: AbortSignal): Promise<void> };

/**
 * `/healthz` (alive), `/readyz` (every check passes within 2 s), `/metrics` (Prometheus text).
 * A failed `/readyz` names the failed checks and, per check, a short reason safe to show anyone
 * who can reach the port: an error code or class (`ECONNREFUSED`, `WRONGPASS`, `timeout`), never
 * an error message, which may quote a URL with a password or a server's reply.
 */
export function createOpsRoutes(options: { registry: Registry; checks: ReadinessCheck[]; isDraining(): boolean }): Route[] {
  return [
    {
      method: 'GET',
      path: '/healthz',
      handler: ({ res }) => {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end('{"status":"ok"}');
      },
    },
    {
      method: 'GET',
      path: '/readyz',
      handler: async ({ res }) => {
        const failed: string[] = [];
        const reasons: Record<string, string> = {};
        if (options.isDraining()) failed.push('draining');
        await Promise.all(
          options.checks.map(async ({ name, check }) => {
            try {
              await check(AbortSignal.timeout(2000));
            } catch (error) {
              failed.push(name);
              reasons[name] = safeReason(error);
            }
          }),
        );
        const ok = failed.length === 0;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(ok ? { status: 'ready' } : { status: 'not_ready', failed, reasons }));
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      handler: ({ res }) => {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
        res.end(options.registry.render());
      },
    },
  ];
}

/**
 * Why a readiness check failed, in a form that can be shown publicly: the first error code along
 * the `cause` chain (a system code such as `ECONNREFUSED`, or the upper-case code that starts a
 * Redis/Valkey error reply such as `WRONGPASS`, `NOAUTH`, `LOADING`), else `timeout` for a
 * timeout, else the error's class name. Never the message itself.
 */
export function safeReason(error: unknown): string {
  const chain: unknown[] = [];
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    chain.push(e);
    e = (e as { cause?: unknown }).cause;
  }
  for (const e of chain) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,39}$/.test(code)) return code;
    const message = (e as { message?: unknown }).message;
    // A server's error reply starts with its code (RESP simple errors); the rest may quote input.
    const reply = (e as { name?: unknown }).name === 'ReplyError' && typeof message === 'string' ? /^([A-Z][A-Z_]{2,31})\b/.exec(message)?.[1] : undefined;
    if (reply !== undefined) return reply;
  }
  for (const e of chain) {
    const name = (e as { name?: unknown }).name;
    const message = (e as { message?: unknown }).message;
    if (name === 'TimeoutError' || (typeof message === 'string' && /timed out/.test(message))) return 'timeout';
  }
  const name = (chain[0] as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' && /^[A-Za-z]{1,40}$/.test(name) ? name : 'error';
}

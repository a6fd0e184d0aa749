import type { Registry } from '../observability/metrics.ts';
import type { Route } from './router.ts';

/** A readiness check: resolves when its part (the store, the signing keys) can serve. */
export type ReadinessCheck = { name: string; check(signal: AbortSignal): Promise<void> };

/** `/healthz` (alive), `/readyz` (every check passes within 2 s), `/metrics` (Prometheus text). */
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
        if (options.isDraining()) failed.push('draining');
        await Promise.all(
          options.checks.map(async ({ name, check }) => {
            try {
              await check(AbortSignal.timeout(2000));
            } catch {
              failed.push(name);
            }
          }),
        );
        const ok = failed.length === 0;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(ok ? { status: 'ready' } : { status: 'not_ready', failed }));
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

/**
 * `mcpgate upstreams deregister NAME`: deletes the gateway's dynamic registrations at an
 * upstream's authorization server (RFC 7592 §2.3, with the registration access token kept from
 * the registration) and forgets them in the shared store, so no replica uses them again. Token
 * rows issued under a deleted registration fail their next refresh with `invalid_client`, and the
 * user is asked to connect again (which registers anew).
 */
import { parseArgs } from 'node:util';
import type { Config } from '../config/schema.ts';
import { openOperatorContext, OperatorStoreError, type OperatorContext } from './operator-context.ts';
import type { CommandOutput } from './sessions.ts';

export const UPSTREAMS_USAGE = 'usage: mcpgate upstreams deregister NAME --config FILE';

/** Runs `mcpgate upstreams …` (argv after `upstreams`). Exit codes: 0 done, 1 failed, 2 usage. */
export async function upstreamsCommand(argv: string[], loadConfig: (path: string) => Config | undefined, out: CommandOutput): Promise<number> {
  let values: { config?: string };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { config: { type: 'string', short: 'c' } } }));
  } catch (error) {
    out.stderr(`mcpgate upstreams: ${(error as Error).message}\n${UPSTREAMS_USAGE}\n`);
    return 2;
  }
  const [action, name, ...extra] = positionals;
  if (action !== 'deregister' || name === undefined || extra.length > 0) {
    out.stderr(`${UPSTREAMS_USAGE}\n`);
    return 2;
  }
  const path = values.config ?? process.env.MCPGATE_CONFIG;
  if (!path) {
    out.stderr('mcpgate upstreams deregister: --config FILE is required\n');
    return 2;
  }
  const config = loadConfig(path);
  if (config === undefined) return 1;
  const upstream = config.upstreams.find((u) => u.name === name);
  if (!upstream) {
    out.stderr(`mcpgate upstreams deregister: no upstream named "${name}" in ${path}\n`);
    return 1;
  }
  if (upstream.auth.mode !== 'oauth') {
    out.stderr(`mcpgate upstreams deregister: upstream "${name}" is in mode ${upstream.auth.mode}; only mode oauth registers at an authorization server\n`);
    return 1;
  }
  if (upstream.auth.clientId !== undefined) {
    out.stdout(`upstream "${name}" uses the preconfigured client ${upstream.auth.clientId}: nothing was registered, nothing to deregister\n`);
    return 0;
  }
  let context: OperatorContext;
  try {
    context = openOperatorContext(config);
  } catch (error) {
    if (!(error instanceof OperatorStoreError)) throw error;
    out.stderr(`mcpgate upstreams deregister: ${error.message}\n`);
    return 1;
  }
  try {
    return await deregister(context, upstream.url, name, out);
  } catch (error) {
    out.stderr(`mcpgate upstreams deregister: ${(error as Error).message}\n`);
    return 1;
  } finally {
    await context.close();
  }
}

async function deregister(context: OperatorContext, url: string, name: string, out: CommandOutput): Promise<number> {
  const resource = await context.discovery.discoverResource(url);
  const issuer = resource.authorization_servers[0]!;
  const results = await context.registration.deregister({ issuer });
  if (results.length === 0) {
    out.stdout(`upstream "${name}": no registration of this gateway at ${issuer} is on record; nothing to do\n`);
    return 0;
  }
  for (const r of results) {
    const line =
      r.outcome === 'deleted'
        ? `deleted client ${r.clientId} at ${issuer} and forgot it`
        : r.outcome === 'not_manageable'
          ? `forgot client ${r.clientId}; ${issuer} gave no registration access token, so delete it there yourself`
          : `could not delete client ${r.clientId} at ${issuer} (${r.detail}); kept it, run the command again`;
    out.stdout(`${line}\n`);
  }
  const failed = results.filter((r) => r.outcome === 'failed').length;
  out.stdout(`upstream "${name}": ${results.length - failed} of ${results.length} registration${results.length === 1 ? '' : 's'} removed; users connect again on their next request\n`);
  return failed > 0 ? 1 : 0;
}

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session } from 'node:inspector/promises';
import { getHeapSpaceStatistics } from 'node:v8';
import { createApp } from '../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../src/authserver/tokens/keys.ts';
import { loadConfigApart } from '../src/config/load-apart.ts';
import type { IdpClient } from '../src/idp/types.ts';
import { createMemoryStore } from '../src/store/memory.ts';
import type { Store } from '../src/store/port.ts';
import { serveParent } from './children.ts';

/**
 * The gateway under test, as `mcpgate serve` builds it: one upstream in `none` mode (or `idp`:
 * the login configured and a signed-in session seeded, see seedSession), the access
 * log at the given level on stdout (which the bench points at /dev/null, so every line is still
 * formatted and written). Memory figures are reported over IPC, never through the gateway's own
 * routes, so the measurement adds no route to the thing measured.
 *
 * With a Valkey URL the app keeps its state in that server (`storage.kind: valkey`, the
 * adapter the app would build itself), and every store call is traced on request so the parent
 * can count the store round trips of one request.
 *
 * Usage: node --expose-gc bench/gateway.ts <upstream URL> [log level] [none|idp] [valkey URL]
 * bench/run.ts runs it compiled (bench/tsconfig.json → .bench-out/build/bench/gateway.js), as
 * the gateway is deployed: Node's type stripping would add some 20 MB to every RSS figure.
 */

const [upstreamUrl, logLevel = 'info', mode = 'none', valkeyUrl] = process.argv.slice(2);
if (!upstreamUrl || (mode !== 'none' && mode !== 'idp')) throw new Error('usage: gateway.ts <upstream URL> [log level] [none|idp] [valkey URL]');
/** The MCP session id every bench request carries (bench/load.ts). */
const MCP_SESSION_ID = '3f2c9a7e-bench-session-0001';

const PUBLIC_URL = 'http://127.0.0.1:8080';
const signingPem = mode === 'idp' ? generateSigningKeyPem() : '';
const storeKey = mode === 'idp' || valkeyUrl ? generateStoreKey() : '';
const lines = [
  'server:',
  '  listen: "127.0.0.1:0"',
  `  publicUrl: "${PUBLIC_URL}"`,
  '  devMode: true',
  `  logLevel: ${logLevel}`,
  'upstreams:',
  '  - name: bench',
  `    url: "${upstreamUrl}"`,
];
if (mode === 'idp') {
  // The IdP is never called in the loop (its token lives a day), so its issuer need not answer.
  lines.push(
    '    auth: { mode: idp }',
    'idp:',
    '  issuer: "http://127.0.0.1:9"',
    '  clientId: bench',
    'authServer:',
    '  signingKeys: ["file:/bench/signing.pem"]',
    '  accessTokenTtl: 1h',
    'storage:',
    '  encryptionKeys: [{ id: bench, key: "file:/bench/store.key" }]',
  );
}
if (valkeyUrl) {
  if (mode !== 'idp') lines.push('storage:', '  encryptionKeys: [{ id: bench, key: "file:/bench/store.key" }]');
  // A prefix per process: two gateways of one run (--ab) each seed their own session, sealed with their own key.
  lines.push('  kind: valkey', `  valkey: { url: "${valkeyUrl}", keyPrefix: "bench${process.pid}:" }`);
}
// Validated as `mcpgate serve` does it: in a child process (src/config/load-apart.ts), so the
// YAML parser and the schema library are not in the measured memory. The key files and the
// config live in a private temporary directory for as long as the child reads them.
const dir = mkdtempSync(join(tmpdir(), 'mcpgate-bench-'));
writeFileSync(join(dir, 'signing.pem'), signingPem, { mode: 0o600 });
writeFileSync(join(dir, 'store.key'), storeKey, { mode: 0o600 });
writeFileSync(join(dir, 'gateway.yaml'), lines.join('\n').replaceAll('file:/bench/', `file:${dir}/`), { mode: 0o600 });
// No MCPGATE_* override from the caller's environment.
const config = await loadConfigApart(join(dir, 'gateway.yaml'), {}, {}).finally(() => rmSync(dir, { recursive: true, force: true }));
const profiler = new Session();
const trace = { on: false, calls: [] as { op: string; start: number; end: number }[] };
const store = traced(valkeyUrl ? await valkeyStore(config) : createMemoryStore());
const app = createApp(config, { store, idpClient: mode === 'idp' ? unusedIdp() : undefined });
const base = await app.listen({ host: '127.0.0.1', port: 0 });
// A clean exit on SIGTERM, so `--cpu-prof` can write its profile.
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
const authorization = mode === 'idp' ? `Bearer ${await seedSession()}` : undefined;

/**
 * What a finished login leaves behind, written through the same domain stores and
 * sealing key the app uses: a session, its IdP tokens, and our access token for the bench
 * upstream. Every bench request then takes the common idp path: a cached JWT, a live session,
 * the session's IdP token (no refresh), the swap.
 */
async function seedSession(): Promise<string> {
  // Imported here: in none mode the gateway's own imports alone make the idle RSS figure.
  const [{ loadSigningKeys }, { RESOURCE_SCOPES }, { createAuthStores }, { createTokenIssuer, randomToken }, { createSealer }] = await Promise.all([
    import('../src/authserver/tokens/keys.ts'),
    import('../src/authserver/tokens/scopes.ts'),
    import('../src/authserver/records/stores.ts'),
    import('../src/authserver/tokens/mint.ts'),
    import('../src/store/sealed.ts'),
  ]);
  const now = Date.now();
  const sealer = createSealer({ keys: [{ id: 'bench', key: Buffer.from(storeKey, 'base64') }] });
  const stores = createAuthStores({ store, sealer });
  const sessionId = randomToken(16);
  await stores.sessions.put({ sessionId, subject: 'bench-user', clientId: 'bench-client', createdAt: now, expiresAt: now + 86_400_000 });
  await stores.idpTokens.put(sessionId, { accessToken: `idp-${randomToken(24)}`, refreshToken: 'unused', expiresAt: now + 86_400_000, tokenType: 'Bearer' }, 86_400_000);
  const keys = loadSigningKeys({ pems: [signingPem], devMode: false, warn: () => undefined });
  const issuer = createTokenIssuer({ issuer: PUBLIC_URL, keys, accessTokenTtlMs: 3_600_000 });
  const grant = { subject: 'bench-user', resource: `${PUBLIC_URL}/bench/mcp`, clientId: 'bench-client', scopes: [...RESOURCE_SCOPES], sessionId };
  // The MCP session the load generator's requests name belongs to this user (session-owner.ts).
  const { createSessionOwners } = await import('../src/gateway/session-owner.ts');
  await createSessionOwners({ store, sealer }).record({ upstream: 'bench', mcpSessionId: MCP_SESSION_ID, owner: 'bench-user' });
  return (await issuer.issueAccessToken(grant)).token;
}

/** The Valkey store the app would build from `storage.valkey` (app.ts storeFor), built here so it can be traced. */
async function valkeyStore(settings: typeof config): Promise<Store> {
  const [{ createValkeyStore }, { valkeyStoreOptions }] = await Promise.all([import('../src/store/valkey.ts'), import('../src/store/valkey_settings.ts')]);
  return createValkeyStore(valkeyStoreOptions(settings.storage.valkey!));
}

/**
 * `store` with every call recorded (operation, start, end) while `trace.on`: the parent sends
 * requests one at a time and counts the calls, and the round trips as groups of overlapping calls
 * (a call that starts after every earlier one ended waits for a round trip of its own).
 */
function traced(inner: Store): Store {
  const wrapped = {} as Record<string, unknown>;
  for (const op of Object.keys(inner) as (keyof Store)[]) {
    const fn = (inner[op] as (...args: unknown[]) => Promise<unknown>).bind(inner);
    wrapped[op] =
      op === 'close' || op === 'ping'
        ? fn
        : (...args: unknown[]) => {
            if (!trace.on) return fn(...args);
            const call = { op, start: performance.now(), end: Infinity };
            trace.calls.push(call);
            return fn(...args).finally(() => (call.end = performance.now()));
          };
  }
  return wrapped as unknown as Store;
}

/** An IdP the bench never reaches: a call means the measured path is not the one meant. */
function unusedIdp(): IdpClient {
  const fail = () => Promise.reject(new Error('bench: the IdP was called'));
  return { startLogin: fail, finishLogin: fail, refresh: fail };
}

serveParent(
  {
    /** process.memoryUsage() in bytes, after a full collection when `gc` is set (needs --expose-gc). */
    memory: (args) => {
      if (args.gc && typeof globalThis.gc === 'function') {
        globalThis.gc();
        globalThis.gc();
      }
      return process.memoryUsage();
    },
    /** Committed and used bytes of each V8 heap space, to tell what an RSS figure is made of. */
    heapSpaces: () => getHeapSpaceStatistics().map((s) => ({ space: s.space_name, size: s.space_size, used: s.space_used_size })),
    openRequests: () => app.frontDoor.inFlight(),
    /**
     * `{ on: true }` starts V8's sampling heap profiler with collected objects included (what
     * `--heap-prof` leaves out: it keeps only what is still alive at exit), so the profile counts
     * every allocation of the requests in between; `{ on: false, file }` writes it to `file`.
     */
    allocProfile: async (args) => {
      if (args.on) {
        profiler.connect();
        await profiler.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
        return undefined;
      }
      const { profile } = await profiler.post('HeapProfiler.stopSampling');
      profiler.disconnect();
      writeFileSync(String(args.file), JSON.stringify(profile));
      return args.file;
    },
    /** `{ on: true }` starts recording store calls; `{ on: false }` stops and returns the calls and the round trips they took. */
    storeTrace: (args) => {
      if (args.on) {
        trace.calls = [];
        trace.on = true;
        return undefined;
      }
      trace.on = false;
      const calls = [...trace.calls].sort((a, b) => a.start - b.start);
      let roundTrips = 0;
      let until = -Infinity;
      for (const call of calls) {
        if (call.start >= until) roundTrips++;
        until = Math.max(until, call.end);
      }
      const ops: Record<string, number> = {};
      for (const call of calls) ops[call.op] = (ops[call.op] ?? 0) + 1;
      return { calls: calls.length, roundTrips, ops };
    },
    /** The `Authorization` header every request must carry (idp mode), or undefined. */
    authorization: () => authorization,
  },
  new URL('/bench/mcp', base).href,
);

import { getHeapSpaceStatistics } from 'node:v8';
import { createApp } from '../src/app.ts';
import { generateSigningKeyPem, generateStoreKey } from '../src/authserver/tokens/keys.ts';
import { parseConfig } from '../src/config/load.ts';
import type { IdpClient } from '../src/idp/types.ts';
import { createMemoryStore } from '../src/store/memory.ts';
import { serveParent } from './children.ts';

/**
 * The gateway under test, as `mcpgate serve` builds it: one upstream in `none` mode (or `idp`:
 * the login configured and a signed-in session seeded, see seedSession), the access
 * log at the given level on stdout (which the bench points at /dev/null, so every line is still
 * formatted and written). Memory figures are reported over IPC, never through the gateway's own
 * routes, so the measurement adds no route to the thing measured.
 *
 * Usage: node --expose-gc bench/gateway.ts <upstream URL> [log level] [none|idp]
 * bench/run.ts runs it compiled (bench/tsconfig.json → .bench-out/build/bench/gateway.js), as
 * the gateway is deployed: Node's type stripping would add some 20 MB to every RSS figure.
 */

const [upstreamUrl, logLevel = 'info', mode = 'none'] = process.argv.slice(2);
if (!upstreamUrl || (mode !== 'none' && mode !== 'idp')) throw new Error('usage: gateway.ts <upstream URL> [log level] [none|idp]');

const PUBLIC_URL = 'http://127.0.0.1:8080';
const signingPem = mode === 'idp' ? generateSigningKeyPem() : '';
const storeKey = mode === 'idp' ? generateStoreKey() : '';
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
const files: Record<string, string> = { '/bench/signing.pem': signingPem, '/bench/store.key': storeKey };
const config = parseConfig(lines.join('\n'), 'bench/gateway.ts', {
  env: {}, // no MCPGATE_* override from the caller's environment
  readFile: (path) => files[path] ?? '',
});
const store = createMemoryStore();
const app = createApp(config, { store, idpClient: mode === 'idp' ? unusedIdp() : undefined });
const base = await app.listen({ host: '127.0.0.1', port: 0 });
// A clean exit on SIGTERM, so `--cpu-prof` can write its profile.
process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
const authorization = mode === 'idp' ? `Bearer ${await seedSession()}` : undefined;

/**
 * What a finished login leaves behind (DESIGN §4), written through the same domain stores and
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
  return (await issuer.issueAccessToken(grant)).token;
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
    /** The `Authorization` header every request must carry (idp mode), or undefined. */
    authorization: () => authorization,
  },
  new URL('/bench/mcp', base).href,
);

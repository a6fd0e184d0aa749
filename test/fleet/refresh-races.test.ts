/**
 * Several replicas on one Valkey, racing on what consumes a one-time value: two real gateway
 * replicas (`races-fixture.ts`) on one redis-server, with every other request sent to the other
 * replica; the company IdP and an upstream's own authorization server are real `oidc-provider`
 * instances that rotate refresh tokens, so a replayed refresh token is `invalid_grant` and
 * revokes the grant. Counted at the providers: refresh grants, `invalid_grant`s, registrations.
 * The session's IdP refresh is raced through each mode that consumes it: `idp`, `id_token` and
 * the subject refresh of `token_exchange` (against a real RFC 8693 endpoint that verifies the
 * subject token against the IdP's JWKS). The winner dying mid-refresh is real too: a third
 * replica, its own `mcpgate serve` process, is SIGKILLed while the IdP holds its refresh grant.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'iovalkey';
import type { IdpTokens } from '../../src/authserver/records/records.ts';
import { lockKey } from '../../src/credentials/single-flight.ts';
import { createOidcIdpClient } from '../../src/idp/oidc.ts';
import type { IdpClient } from '../../src/idp/types.ts';
import { AUDIENCE, EXCHANGE_CLIENT, EXCHANGE_SECRET, startExchangeEndpoint, type ExchangeEndpoint } from '../support/exchange-endpoint.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { answerLikeMcp, startRawUpstream, type RawUpstream } from '../support/mcp-upstream.ts';
import { startRedis, type RedisServer } from '../support/redis.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';
import { confirmConnect, createBrowser, formAction, isConnectConfirmation, type Page } from '../upstream-oauth/browser.ts';
import { startFleet, type Fleet } from './races-fixture.ts';

const CONCURRENT = 24;
const DAY = 86_400_000;

let redis: RedisServer;
let idp: DevIdp;
let raw: RawUpstream;
let notes: UpstreamWithAs;
let wiki: UpstreamWithAs;
let fleet: Fleet;
let idpClient: IdpClient;
let exchange: ExchangeEndpoint;

before(async () => {
  [redis, idp, raw, notes, wiki] = await Promise.all([
    startRedis(),
    startDevIdp({ rotateRefreshTokens: true }),
    startRawUpstream(answerLikeMcp),
    startUpstreamWithAs({ registration: 'dcr' }),
    startUpstreamWithAs({ registration: 'dcr' }),
  ]);
  exchange = await startExchangeEndpoint(idp);
  fleet = await startFleet({
    valkeyUrl: redis.url,
    idp,
    env: { EXCHANGE_SECRET },
    upstreams: [
      { name: 'kube', url: raw.url, auth: { mode: 'idp', refreshMargin: '60s' } },
      // The same MCP server behind the two other modes that spend the session's IdP refresh token.
      { name: 'sso', url: raw.url, auth: { mode: 'id_token' } },
      { name: 'xchg', url: raw.url, auth: { mode: 'token_exchange', tokenEndpoint: exchange.url, audience: AUDIENCE, clientId: EXCHANGE_CLIENT, clientSecret: 'env:EXCHANGE_SECRET' } },
      { name: 'notes', url: notes.mcpUrl, auth: { mode: 'oauth', challenge: 'tool_result' } },
      { name: 'wiki', url: wiki.mcpUrl, auth: { mode: 'oauth', challenge: 'tool_result' } },
    ],
  });
  idpClient = createOidcIdpClient({
    config: { issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret, scopes: ['openid', 'profile', 'email', 'offline_access'], userClaim: 'sub', authParams: {} },
    redirectUri: `${fleet.publicUrl}/oauth/callback`,
    devMode: true,
  });
});
after(async () => {
  await fleet?.close();
  await Promise.all([raw?.close(), notes?.close(), wiki?.close(), idp?.close(), exchange?.close()]);
  await redis?.stop();
});

/** A real login at the IdP, as `/oauth/callback` performs it: the IdP's tokens. */
async function idpLogin(login: string): Promise<IdpTokens> {
  const user = idp.users.find((u) => u.login === login)!;
  const state = randomBytes(16).toString('base64url');
  const start = await idpClient.startLogin(state);
  const browser = createBrowser();
  const form = await browser.open(start.url);
  const done = await browser.submit(formAction(form, /\/login$/), { login: user.login, password: user.password }, { stopAt: (url) => url.pathname === '/oauth/callback' });
  const result = await idpClient.finishLogin(new URL(String(done.headers.location), done.url), { state, codeVerifier: start.codeVerifier, nonce: start.nonce });
  assert.ok(result.tokens.refreshToken, 'offline_access gave a refresh token');
  return result.tokens;
}

/** The IdP tokens as if the access token (300 s) had been issued four and a half minutes ago: inside the 60 s refresh margin. */
const accessTokenNearExpiry = (tokens: IdpTokens): IdpTokens => ({ ...tokens, expiresAt: Date.now() + 30_000 });

/**
 * The IdP tokens as if the ID token (3600 s) had been issued 59.5 minutes ago. The gateway reads
 * the stored ID token's `exp` without verifying it again (it was verified at login), so only the
 * payload is rewritten; the upstream here checks no signature.
 */
function idTokenNearExpiry(tokens: IdpTokens): IdpTokens {
  const [header, payload, signature] = tokens.idToken!.split('.');
  const claims = { ...(JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>), exp: Math.floor((Date.now() + 30_000) / 1000) };
  return { ...accessTokenNearExpiry(tokens), idToken: `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}` };
}

/** A session for `upstream` whose stored IdP tokens are made to need a refresh by `nearExpiry`. */
async function sessionNearExpiry(login: string, upstream = 'kube', nearExpiry: (tokens: IdpTokens) => IdpTokens = accessTokenNearExpiry) {
  const idpTokens = await idpLogin(login);
  const ours = await fleet.login({ subject: login, resource: `${fleet.publicUrl}/${upstream}/mcp`, idpTokens });
  await fleet.stores.idpTokens.put(ours.sessionId, nearExpiry(idpTokens), 30 * DAY);
  return { ...ours, idpTokens };
}

/** The modes that spend the session's IdP refresh token: the upstream, how its session is made stale, what each forwarded request must carry. */
const idpRefreshRaces: Array<{ mode: string; upstream: string; login: string; nearExpiry: (tokens: IdpTokens) => IdpTokens; sent: (stored: IdpTokens) => RegExp | string }> = [
  { mode: 'idp', upstream: 'kube', login: 'alice', nearExpiry: accessTokenNearExpiry, sent: (stored) => `Bearer ${stored.accessToken}` },
  { mode: 'id_token', upstream: 'sso', login: 'alice', nearExpiry: idTokenNearExpiry, sent: (stored) => `Bearer ${stored.idToken}` },
  // The exchange endpoint issues `xchg-<sub>-<n>`; that every exchange presented the refreshed token is checked below.
  { mode: 'token_exchange', upstream: 'xchg', login: 'bob', nearExpiry: accessTokenNearExpiry, sent: () => /^Bearer xchg-/ },
];

/** A JSON-RPC request to an upstream through replica `i % 2` (the per-request round robin), or through `base`. */
async function call(i: number, name: string, accessToken: string, method = 'tools/list', params: Record<string, unknown> = {}, base = fleet.bases[i % 2]) {
  const res = await fetch(`${base}/${name}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: i + 1, method, params }),
  });
  return { status: res.status, body: await res.text(), retryAfter: res.headers.get('retry-after') };
}

const whoami = (i: number, name: string, accessToken: string) => call(i, name, accessToken, 'tools/call', { name: 'whoami', arguments: {} });

function toolResult(answer: { status: number; body: string }): { isError?: boolean; content?: Array<{ text?: string }>; structuredContent?: Record<string, string> } {
  assert.equal(answer.status, 200, answer.body.slice(0, 300));
  const result = (JSON.parse(answer.body) as { result?: ReturnType<typeof toolResult> }).result;
  assert.ok(result, answer.body.slice(0, 300));
  return result;
}

/** Runs the browser leg of an upstream connect link: our sign-in at the IdP, then the upstream's login and consent. */
async function completeConnect(authUrl: string, login: string, as: UpstreamWithAs): Promise<Page> {
  const user = idp.users.find((u) => u.login === login)!;
  const browser = createBrowser();
  let page = await browser.open(authUrl);
  for (let step = 0; step < 6 && page.status === 200; step++) {
    if (page.url.startsWith(idp.issuer)) page = await browser.submit(formAction(page, /\/login$/), { login: user.login, password: user.password });
    else if (page.url.startsWith(as.issuer) && /\/login"/.test(page.body)) page = await browser.submit(formAction(page, /\/login$/), { login: `${login}-up` });
    else if (page.url.startsWith(as.issuer)) page = await browser.submit(formAction(page, /\/approve$/), {});
    else if (isConnectConfirmation(page)) page = await confirmConnect(browser, page);
    else break;
  }
  return page;
}

describe('two replicas, one Valkey, providers that rotate refresh tokens', () => {
  for (const race of idpRefreshRaces) {
    test(`IdP refresh (mode ${race.mode}): ${CONCURRENT} concurrent requests over both replicas → one refresh grant, no invalid_grant, the session alive`, async (t) => {
      const session = await sessionNearExpiry(race.login, race.upstream, race.nearExpiry);
      const [grants, rejections] = [idp.refreshCount(), idp.refreshRejections()];
      const [seenBefore, exchangesBefore] = [raw.requests.length, exchange.state.requests.length];
      const started = performance.now();
      const answers = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => call(i, race.upstream, session.accessToken)));
      const took = performance.now() - started;
      const statuses = answers.map((a) => a.status);
      const [grantsSeen, invalidGrants] = [idp.refreshCount() - grants, idp.refreshRejections() - rejections];
      const exchanges = exchange.state.requests.slice(exchangesBefore);
      t.diagnostic(
        `IdP refresh race (mode ${race.mode}): ${CONCURRENT} requests over 2 replicas → ${grantsSeen} refresh grant(s) at the IdP, ${invalidGrants} invalid_grant, ` +
          `statuses ${[...new Set(statuses)].join(',')}, all answered in ${took.toFixed(0)} ms${race.mode === 'token_exchange' ? `, ${exchanges.length} exchange(s) (one per replica: the exchanged-token cache is per process)` : ''}`,
      );
      assert.deepEqual(statuses, Array(CONCURRENT).fill(200), answers.find((a) => a.status !== 200)?.body);
      assert.equal(grantsSeen, 1);
      assert.equal(invalidGrants, 0);

      const stored = (await fleet.stores.idpTokens.get(session.sessionId))!;
      assert.notEqual(stored.refreshToken, session.idpTokens.refreshToken, 'the rotated refresh token was saved');
      // Every request used what the refresh brought: none went out with the token about to expire.
      const sent = raw.requests.slice(seenBefore).map((r) => r.headers.authorization ?? '');
      assert.equal(sent.length, CONCURRENT);
      const expected = race.sent(stored);
      for (const header of sent) {
        if (typeof expected === 'string') assert.equal(header, expected);
        else assert.match(header, expected);
      }
      if (race.mode === 'token_exchange') {
        assert.ok(exchanges.length >= 1 && exchanges.length <= 2, `${exchanges.length} exchanges`);
        for (const form of exchanges) assert.equal(form.get('subject_token'), stored.accessToken, 'the exchange presented the refreshed IdP access token');
      }
      assert.ok(await fleet.stores.sessions.get(session.sessionId), 'the session is alive');
      for (const i of [0, 1]) assert.equal((await call(i, race.upstream, session.accessToken)).status, 200);
      assert.equal(idp.refreshCount() - grants, 1, 'no further refresh');
    });
  }

  test(`upstream OAuth refresh: the upstream answers 401 to ${CONCURRENT} concurrent requests over both replicas → one refresh grant, no invalid_grant`, async (t) => {
    const bob = await fleet.login({ subject: 'bob', resource: `${fleet.publicUrl}/notes/mcp` });
    const required = toolResult(await whoami(0, 'notes', bob.accessToken)).structuredContent!;
    assert.equal(required.status, 'auth_required');
    const page = await completeConnect(required.auth_url!, 'bob', notes);
    assert.equal(page.status, 200, page.body.slice(0, 300));
    assert.match(page.body, /Connected to notes/);
    assert.equal(toolResult(await whoami(1, 'notes', bob.accessToken)).content?.[0]?.text, 'upstream user bob-up');
    const before = (await fleet.upstreamStores.tokens.get(bob.sessionId, 'notes'))!;

    const [grants, rejections] = [notes.refreshCount(), notes.refreshRejections()];
    notes.rejectIssuedTokens();
    const answers = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => whoami(i, 'notes', bob.accessToken)));
    const [grantsSeen, invalidGrants] = [notes.refreshCount() - grants, notes.refreshRejections() - rejections];
    t.diagnostic(`upstream OAuth refresh race: ${CONCURRENT} requests over 2 replicas → ${grantsSeen} refresh grant(s) at the upstream's AS, ${invalidGrants} invalid_grant`);
    for (const answer of answers) assert.equal(toolResult(answer).content?.[0]?.text, 'upstream user bob-up');
    assert.equal(grantsSeen, 1);
    assert.equal(invalidGrants, 0);
    const after = (await fleet.upstreamStores.tokens.get(bob.sessionId, 'notes'))!;
    assert.notEqual(after.refreshToken, before.refreshToken, 'the rotated refresh token was saved');
    assert.equal(toolResult(await whoami(0, 'notes', bob.accessToken)).content?.[0]?.text, 'upstream user bob-up');
  });

  test('upstream DCR: first-time connections of 8 sessions over both replicas → one registration at the AS', async (t) => {
    const sessions = await Promise.all(Array.from({ length: 8 }, () => fleet.login({ subject: 'alice', resource: `${fleet.publicUrl}/wiki/mcp` })));
    const registrations = wiki.registrations();
    const answers = await Promise.all(sessions.map((s, i) => whoami(i, 'wiki', s.accessToken)));
    t.diagnostic(`upstream DCR race: 8 first connections over 2 replicas → ${wiki.registrations() - registrations} registration(s) at the AS`);
    for (const answer of answers) assert.equal(toolResult(answer).structuredContent?.status, 'auth_required');
    assert.equal(wiki.registrations() - registrations, 1);
  });

  test('a winner that died holding the lock: the others wait it out (lock TTL) and then one of them refreshes', async (t) => {
    const carol = await sessionNearExpiry('bob');
    // What a replica killed mid-refresh leaves behind: its lock, which only its TTL ends.
    await fleet.store.set(lockKey(`refresh:idp:${carol.sessionId}`), 'a-replica-that-died', 1500);
    const grants = idp.refreshCount();
    const started = performance.now();
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => call(i, 'kube', carol.accessToken)));
    const took = performance.now() - started;
    t.diagnostic(`dead winner: 6 requests answered after ${Math.round(took)} ms (lock TTL left 1500 ms), ${idp.refreshCount() - grants} refresh grant(s)`);
    assert.deepEqual(answers.map((a) => a.status), Array(6).fill(200));
    assert.equal(idp.refreshCount() - grants, 1);
    assert.ok(took >= 1000, 'nobody refreshed while the dead winner\'s lock stood');
    assert.ok(await fleet.stores.sessions.get(carol.sessionId));
  });

  test('the winner killed mid-refresh: a replica process SIGKILLed while the IdP holds its refresh; the others wait out its lock, then one refresh grant', async (t) => {
    const dave = await sessionNearExpiry('alice');
    const doomed = await fleet.spawnReplica();
    const [grants, rejections] = [idp.refreshCount(), idp.refreshRejections()];
    // The IdP holds the refresh grant it receives and, once its client is dead, drops it uncompleted.
    let arrived!: () => void;
    let drop!: (error: Error) => void;
    const atIdp = new Promise<void>((resolve) => (arrived = resolve));
    idp.beforeRefreshGrant(() => {
      arrived();
      return new Promise<void>((_resolve, reject) => (drop = reject));
    });
    const doomedCall = call(0, 'kube', dave.accessToken, 'tools/list', {}, doomed.url).catch(() => 'connection lost');
    await atIdp;
    const admin = new Redis(redis.url);
    const ttlLeft = await admin.pttl(fleet.keyPrefix + lockKey(`refresh:idp:${dave.sessionId}`)).finally(() => admin.disconnect());
    assert.ok(ttlLeft > 0, 'the replica process holds the lock while the IdP holds its refresh');
    doomed.process.kill('SIGKILL');
    assert.equal(await doomed.exited, 'SIGKILL');
    const killedAt = performance.now();
    idp.beforeRefreshGrant(null);
    drop(new Error('its client is gone'));
    assert.equal(await doomedCall, 'connection lost');

    // Six agents over the two other replicas, each retrying after Retry-After as an agent does.
    const answers = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const statuses: number[] = [];
        for (;;) {
          const answer = await call(i, 'kube', dave.accessToken);
          statuses.push(answer.status);
          if (answer.status !== 503 || statuses.length === 3) return { ...answer, statuses, at: performance.now() - killedAt };
          assert.match(answer.retryAfter ?? '', /^\d+$/, 'a 503 says when to come back');
          await sleep(Number(answer.retryAfter) * 1000);
        }
      }),
    );
    const took = Math.max(...answers.map((a) => a.at));
    t.diagnostic(
      `killed winner: its lock had ${ttlLeft} ms left at the kill; 6 requests over the other 2 replicas answered ${Math.round(took)} ms after it ` +
        `(statuses per request ${answers.map((a) => a.statuses.join('→')).join(' ')}), ${idp.refreshCount() - grants} completed refresh grant(s), ${idp.refreshRejections() - rejections} invalid_grant`,
    );
    for (const answer of answers) assert.equal(answer.status, 200, answer.body.slice(0, 300));
    assert.equal(idp.refreshCount() - grants, 1, 'one completed grant: the dead replica\'s never completed');
    assert.equal(idp.refreshRejections() - rejections, 0);
    assert.ok(Math.min(...answers.map((a) => a.at)) >= ttlLeft - 250, 'nobody refreshed while the dead replica\'s lock stood');
    assert.ok(took < ttlLeft + 10_000, 'recovered within the lock TTL and one Retry-After');
    assert.ok(await fleet.stores.sessions.get(dave.sessionId), 'the session is alive');
  });

  /** `CLIENT PAUSE … WRITE`: Valkey holds every write for `ms` (longer than the gateway's 2 s command timeout), reads go on. */
  async function pauseWrites(ms: number): Promise<void> {
    const admin = new Redis(redis.url);
    try {
      await admin.call('CLIENT', 'PAUSE', String(ms), 'WRITE');
    } finally {
      admin.disconnect();
    }
  }

  test('a store hiccup right after the IdP rotated: the save is retried, the agent gets its answer, the new refresh token is kept', async () => {
    const alice = await sessionNearExpiry('alice');
    const [grants, rejections] = [idp.refreshCount(), idp.refreshRejections()];
    idp.beforeRefreshGrant(() => pauseWrites(2500));
    let answer;
    try {
      answer = await call(0, 'kube', alice.accessToken);
    } finally {
      idp.beforeRefreshGrant(null);
    }
    assert.equal(answer.status, 200, answer.body.slice(0, 300));
    assert.equal(idp.refreshCount() - grants, 1);
    const stored = (await fleet.stores.idpTokens.get(alice.sessionId))!;
    assert.notEqual(stored.refreshToken, alice.idpTokens.refreshToken, 'the rotated refresh token was saved');
    // The next refresh uses the saved token: no replay, the grant lives.
    await fleet.stores.idpTokens.put(alice.sessionId, { ...stored, expiresAt: Date.now() + 30_000 }, 30 * DAY);
    assert.equal((await call(1, 'kube', alice.accessToken)).status, 200);
    assert.equal(idp.refreshCount() - grants, 2);
    assert.equal(idp.refreshRejections() - rejections, 0);
  });

  test('the same for an upstream OAuth refresh', async () => {
    const bob = await fleet.login({ subject: 'bob', resource: `${fleet.publicUrl}/notes/mcp` });
    const required = toolResult(await whoami(1, 'notes', bob.accessToken)).structuredContent!;
    assert.match((await completeConnect(required.auth_url!, 'bob', notes)).body, /Connected to notes/);
    assert.equal(toolResult(await whoami(0, 'notes', bob.accessToken)).content?.[0]?.text, 'upstream user bob-up');
    const before = (await fleet.upstreamStores.tokens.get(bob.sessionId, 'notes'))!;
    const [grants, rejections] = [notes.refreshCount(), notes.refreshRejections()];
    notes.rejectIssuedTokens();
    notes.beforeRefreshGrant(() => pauseWrites(2500));
    let answer;
    try {
      answer = await whoami(0, 'notes', bob.accessToken);
    } finally {
      notes.beforeRefreshGrant(null);
    }
    assert.equal(toolResult(answer).content?.[0]?.text, 'upstream user bob-up');
    const after = (await fleet.upstreamStores.tokens.get(bob.sessionId, 'notes'))!;
    assert.notEqual(after.refreshToken, before.refreshToken, 'the rotated refresh token was saved');
    notes.rejectIssuedTokens();
    assert.equal(toolResult(await whoami(1, 'notes', bob.accessToken)).content?.[0]?.text, 'upstream user bob-up');
    assert.equal(notes.refreshCount() - grants, 2);
    assert.equal(notes.refreshRejections() - rejections, 0);
  });

  test('the time one uncontended refresh takes through a replica (reported, not asserted)', async (t) => {
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) {
      const s = await sessionNearExpiry('alice');
      const start = performance.now();
      assert.equal((await call(i, 'kube', s.accessToken)).status, 200);
      samples.push(performance.now() - start);
    }
    const plain = await sessionNearExpiry('alice');
    await call(0, 'kube', plain.accessToken);
    const start = performance.now();
    assert.equal((await call(0, 'kube', plain.accessToken)).status, 200);
    const noRefresh = performance.now() - start;
    t.diagnostic(
      `a request that refreshes the IdP token: median ${samples.sort((a, b) => a - b)[5]!.toFixed(1)} ms (min ${samples[0]!.toFixed(1)}); one that does not: ${noRefresh.toFixed(1)} ms ` +
        '(of which the lock is one SET NX PX and one compare-and-delete script: see fleet-single-flight.test.ts)',
    );
  });
});

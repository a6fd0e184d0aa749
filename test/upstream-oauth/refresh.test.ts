/**
 * Keeping a connection alive without the user (RFC 6749 §6), telling a dead grant from an
 * outage, and step-up from an upstream's 403 `insufficient_scope` — against the real upstream
 * and its own authorization server. Expiry is driven by the gateway's fake clock.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { authRequiredOf, sessionOf, startHarness, toolText, type Harness, type TestUser } from './harness.ts';

let h: Harness;
let scoped: Harness;
before(async () => {
  [h, scoped] = await Promise.all([startHarness({ registration: 'dcr' }), startHarness({ registration: 'dcr', scopes: ['notes:read'] })]);
});
after(async () => {
  await Promise.all([h?.close(), scoped?.close()]);
});

const call = (harness: Harness, user: TestUser, name = 'whoami', args: Record<string, unknown> = {}) =>
  harness.rpc(user, 'tools/call', { name, arguments: args });

async function connect(harness: Harness, subject = 'alice'): Promise<TestUser> {
  const user = sessionOf(subject);
  const authUrl = authRequiredOf(await call(harness, user)).auth_url;
  const page = await harness.connect(harness.browser(user), authUrl, { login: `${subject}-up` });
  assert.equal(page.status, 200, page.body);
  return user;
}

/** Puts the gateway's clock past the point where the upstream token must be refreshed (300 s tokens, 60 s margin). */
const nearExpiry = (harness: Harness) => harness.advance(250_000);

describe('refresh', () => {
  test('an expiring upstream token is refreshed before use, without the user', async () => {
    const user = await connect(h);
    const before = (await h.flows.token(user.sessionId, 'notes'))!;
    const refreshes = h.upstream.refreshCount();
    nearExpiry(h);
    assert.equal(toolText(await call(h, user)), 'upstream user alice-up');
    assert.equal(h.upstream.refreshCount(), refreshes + 1);
    const after = (await h.flows.token(user.sessionId, 'notes'))!;
    assert.notEqual(after.accessToken, before.accessToken);
    assert.notEqual(after.refreshToken, before.refreshToken, 'the rotated refresh token was stored');
    assert.equal(h.upstream.seenAuthorization.at(-1), `Bearer ${after.accessToken}`);
  });

  test('concurrent requests on an expiring token cause one refresh', async () => {
    const user = await connect(h);
    const refreshes = h.upstream.refreshCount();
    nearExpiry(h);
    const answers = await Promise.all(Array.from({ length: 10 }, () => call(h, user)));
    for (const answer of answers) assert.equal(toolText(answer), 'upstream user alice-up');
    assert.equal(h.upstream.refreshCount(), refreshes + 1);
  });

  test('an upstream 401 on a refreshable token: one refresh, one retry, and the agent never sees the 401', async () => {
    const user = await connect(h);
    assert.equal(toolText(await call(h, user)), 'upstream user alice-up');
    const refreshes = h.upstream.refreshCount();
    h.upstream.rejectIssuedTokens();
    const answer = await call(h, user);
    assert.equal(answer.status, 200);
    assert.equal(toolText(answer), 'upstream user alice-up');
    assert.equal(h.upstream.refreshCount(), refreshes + 1);
  });

  test('a refresh token the upstream refuses ends the connection: a new auth_required, the row is gone', async () => {
    const user = await connect(h);
    h.upstream.failRefresh('invalid_grant');
    try {
      nearExpiry(h);
      const answer = authRequiredOf(await call(h, user));
      assert.match(answer.auth_url, /\/oauth\/upstream\/start\?flow=/);
      assert.equal(await h.flows.token(user.sessionId, 'notes'), undefined);
    } finally {
      h.upstream.failRefresh(null);
    }
  });

  test('the same after an upstream 401', async () => {
    const user = await connect(h);
    assert.equal(toolText(await call(h, user)), 'upstream user alice-up');
    h.upstream.failRefresh('invalid_grant');
    try {
      h.upstream.rejectIssuedTokens();
      authRequiredOf(await call(h, user));
      assert.equal(await h.flows.token(user.sessionId, 'notes'), undefined);
    } finally {
      h.upstream.failRefresh(null);
    }
  });

  test('an authorization server outage during refresh answers 503 and keeps the connection', async () => {
    const user = await connect(h);
    h.upstream.failRefresh('down');
    nearExpiry(h);
    try {
      const answer = await call(h, user);
      assert.equal(answer.status, 503);
      const body = JSON.parse(answer.body);
      assert.match(body.error.message, /authorization server of upstream "notes" is unavailable/);
      assert.ok(await h.flows.token(user.sessionId, 'notes'), 'the token row survives an outage');
    } finally {
      h.upstream.failRefresh(null);
    }
    assert.equal(toolText(await call(h, user)), 'upstream user alice-up');
  });
});

describe('step-up', () => {
  test("an upstream 403 insufficient_scope starts a flow for granted ∪ requested scopes, and then the call succeeds", async () => {
    const user = await connect(scoped);
    assert.deepEqual((await scoped.flows.token(user.sessionId, 'notes'))!.scopes, ['notes:read']);
    assert.equal(toolText(await call(scoped, user)), 'upstream user alice-up');

    const denied = await call(scoped, user, 'write_note', { text: 'hi' });
    const required = authRequiredOf(denied);
    const browser = scoped.browser(user);
    const page = await scoped.connect(browser, required.auth_url);
    assert.equal(page.status, 200, page.body);
    const toAs = new URL(browser.visited.find((u) => u.startsWith(`${scoped.upstream.issuer}/auth?`))!);
    assert.equal(toAs.searchParams.get('scope'), 'notes:read notes:write');

    assert.equal(toolText(await call(scoped, user, 'write_note', { text: 'hi' })), 'saved "hi" for alice-up');
    assert.deepEqual((await scoped.flows.token(user.sessionId, 'notes'))!.scopes.sort(), ['notes:read', 'notes:write']);
  });
});

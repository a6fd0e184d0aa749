/**
 * A client with a private-use redirect scheme, the whole browser leg in a real headless Chromium
 * (issue 13): Cursor registers `cursor://anysphere.cursor-retrieval/oauth/user-<server>/callback`
 * as it does, the user signs in at the development IdP's form, our consent page says that the
 * answer opens the app registered for `cursor:` on the device, and the approval sends the code
 * there. A browser cannot follow `cursor:` without Cursor installed, so the test reads the
 * redirect our consent endpoint answered with, and checks the code it carries is the one stored
 * for this client, redirect URI and PKCE challenge.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { closeChromium, launchChromium, newBrowserContext, signInAtIdp, within } from '../support/browser-agent.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { pkcePair, registerClient, startLoginServer, type LoginServer } from '../authserver/login-server.ts';

const CURSOR_REDIRECT = 'cursor://anysphere.cursor-retrieval/oauth/user-notes/callback';

let idp: DevIdp;
let server: LoginServer;
let browser: Browser;

before(async () => {
  idp = await startDevIdp();
  server = await startLoginServer({ idp, upstreams: ['notes'] });
  browser = await launchChromium();
});
after(async () => {
  await closeChromium(browser);
  await server?.close();
  await idp?.close();
});

describe('a cursor: client, authorize → IdP login → consent → code', () => {
  let context: BrowserContext;
  let page: Page;
  before(async () => {
    context = await newBrowserContext(browser);
    page = await context.newPage();
  });
  after(() => (context ? within('a browser context to close', context.close()) : undefined));

  test('the consent page names the app the redirect opens, and the code goes to the cursor: redirect', async () => {
    // Cursor's registration, as it sends it.
    const registered = await registerClient(server.issuer, {
      client_name: 'Cursor',
      redirect_uris: [CURSOR_REDIRECT],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    });
    const pkce = pkcePair();
    const params = new URLSearchParams({
      client_id: registered.client_id,
      redirect_uri: CURSOR_REDIRECT,
      response_type: 'code',
      code_challenge: pkce.challenge,
      code_challenge_method: 'S256',
      state: 'cursor-state',
      scope: 'mcp',
      resource: server.resource('notes'),
    });

    const consentPage = page.waitForResponse((r) => r.url().startsWith(`${server.issuer}/oauth/callback`));
    await page.goto(`${server.issuer}/oauth/authorize?${params}`);
    const alice = idp.users.find((u) => u.login === 'alice')!;
    await signInAtIdp(page, { login: alice.login, password: alice.password });
    const shown = await within('the consent page', consentPage);
    assert.equal(shown.status(), 200);
    // The form's answer redirects to cursor:, which the page's form-action must allow.
    assert.match(shown.headers()['content-security-policy'] ?? '', /form-action 'self' cursor:/);

    assert.equal(await page.locator('#redirect-host').innerText(), 'the app registered for cursor: on your device');
    const warning = await page.locator('#private-use-warning').innerText();
    assert.match(warning, /Your answer opens the app registered for cursor: on your device\./);
    assert.match(warning, /Any application installed on this device can claim that scheme/);
    assert.equal(await page.locator('#loopback-warning').count(), 0, 'not a loopback client');
    assert.match(await page.locator('main').innerText(), /“Cursor”/);

    const answered = page.waitForResponse((r) => r.url() === `${server.issuer}/oauth/consent` && r.request().method() === 'POST');
    await page.click('button[value="approve"]', { noWaitAfter: true });
    const answer = await within('the consent answer', answered);
    assert.ok([302, 303].includes(answer.status()), `status ${answer.status()}`);
    const location = answer.headers()['location']!;
    assert.ok(location.startsWith(`${CURSOR_REDIRECT}?`), location);
    const back = new URL(location);
    assert.equal(back.protocol, 'cursor:');
    assert.equal(back.searchParams.get('state'), 'cursor-state');
    assert.equal(back.searchParams.get('iss'), server.issuer);
    assert.equal(back.searchParams.get('error'), null);
    const code = back.searchParams.get('code');
    assert.ok(code, location);

    // The code is ours, for this client, this redirect URI and this PKCE challenge, and single use.
    const consumed = await server.stores.codes.consume(code);
    assert.ok(consumed && !consumed.reused, 'the code is stored and unused');
    assert.equal(consumed.record.clientId, registered.client_id);
    assert.equal(consumed.record.redirectUri, CURSOR_REDIRECT);
    assert.equal(consumed.record.codeChallenge, pkce.challenge);
    assert.equal(consumed.record.resource, server.resource('notes'));
  });
});

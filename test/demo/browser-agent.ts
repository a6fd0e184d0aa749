/**
 * An MCP agent that logs in as a person would: the official SDK client's own OAuth
 * (`OAuthClientProvider`: 401 → discovery → DCR → authorize → token), whose "open the browser"
 * step drives a Chromium page through the IdP's login form (when the browser has no IdP session
 * yet) and mcpgate's consent page, and catches the code on a loopback redirect.
 *
 * Several agents may share one browser context: the second one finds the IdP session and only
 * meets the consent page (consent is remembered per client, and each agent registers its own).
 */
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';
import type { BrowserContext } from 'playwright-core';
import type { RecordingServer } from '../authserver/login-server.ts';

/** A user of the development IdP. */
export interface BrowserUser {
  login: string;
  password: string;
}

/** See the module comment. `catcher` receives the redirect at `/callback`. */
export class BrowserAgent implements OAuthClientProvider {
  private info: OAuthClientInformationMixed | undefined;
  private saved: OAuthTokens | undefined;
  private verifier = '';
  /** The last authorization code the browser delivered. */
  code: string | undefined;
  /** Consent pages approved so far. */
  consentPagesSeen = 0;
  /** IdP login forms filled so far. */
  loginFormsSeen = 0;
  readonly context: BrowserContext;
  readonly user: BrowserUser;
  readonly catcher: RecordingServer;

  constructor(context: BrowserContext, user: BrowserUser, catcher: RecordingServer) {
    this.context = context;
    this.user = user;
    this.catcher = catcher;
  }

  get redirectUrl(): string {
    return `${this.catcher.url}/callback`;
  }
  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: `Test agent of ${this.user.login}`,
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this.info;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.info = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }

  async redirectToAuthorization(url: URL): Promise<void> {
    const page = await this.context.newPage();
    const arrived = this.catcher.next('/callback');
    try {
      await page.goto(url.href);
      if ((await page.locator('input[name="password"]').count()) > 0) {
        this.loginFormsSeen++;
        await page.fill('input[name="login"]', this.user.login);
        await page.fill('input[name="password"]', this.user.password);
        await page.click('button[type="submit"]');
      }
      const next = await Promise.race([page.waitForSelector('button[value="approve"]').then(() => 'consent' as const), arrived.then(() => 'done' as const)]);
      if (next === 'consent') {
        this.consentPagesSeen++;
        await page.click('button[value="approve"]');
      }
      const callback = await arrived;
      // Let the redirect finish loading: a page closed mid-navigation can hang Chromium's close for good.
      await page.waitForURL((u) => u.href.startsWith(this.redirectUrl));
      assert.equal(callback.searchParams.get('error'), null, callback.searchParams.get('error_description') ?? '');
      this.code = callback.searchParams.get('code') ?? undefined;
    } finally {
      await page.close();
    }
  }
}

/**
 * Connects an SDK client to `url` as SDK-based agents do: the first connect meets 401 and runs
 * the OAuth dance in the browser, `finishAuth` trades the code, and a second connect succeeds.
 */
export async function connectWithLogin(agent: BrowserAgent, url: URL, capabilities: ClientCapabilities = {}): Promise<Client> {
  const first = new StreamableHTTPClientTransport(url, { authProvider: agent });
  await assert.rejects(new Client({ name: 'browser-agent', version: '1.0.0' }).connect(first), UnauthorizedError);
  assert.ok(agent.code, 'the browser leg delivered a code');
  await first.finishAuth(agent.code);
  const client = new Client({ name: 'browser-agent', version: '1.0.0' }, { capabilities });
  await client.connect(new StreamableHTTPClientTransport(url, { authProvider: agent }));
  return client;
}

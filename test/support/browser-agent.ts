/**
 * The browser side of the end-to-end tests, in one place: Chromium launched the same way
 * everywhere, and an MCP agent that logs in as a person would — the official SDK client's own
 * OAuth (`OAuthClientProvider`: 401 → RFC 9728/8414 discovery → DCR → authorize → token) whose
 * "open the browser" step drives a Chromium tab through whatever pages come (the IdP's login
 * form, our consent page, an upstream's login and consent in a re-challenge chain, our
 * "Connecting to …" page) until the code reaches the agent's loopback redirect URI.
 *
 * Why it is shaped this way (each rule fixed a hang seen under `npm test` on a loaded machine):
 * - A page is never closed while a navigation is in flight: Chromium then blocks `page.close()`
 *   until the whole browser closes. The agent waits for the loopback page to finish loading, and
 *   keeps one tab for all its authorizations (closed with its context or the browser).
 * - Every wait is bounded ({@link BROWSER_WAIT_MS}) and fails with what it was waiting for and
 *   where the page was, well before the test runner's own timeout.
 * - The code is read from the URL the tab actually loaded, not from a shared server's "next
 *   request" queue, so a failed attempt can never leave a waiter that swallows a later code.
 */
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/**
 * Upper bound of any single browser wait (a navigation, a selector, a close), in milliseconds.
 * Generous for a busy 2-core machine, yet several of them fit in the runner's 120 s test timeout.
 */
export const BROWSER_WAIT_MS = 30_000;

/** Where the tests expect Chromium. A missing chromium is a failure, not a skip: `apt-get install chromium`. */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * Rejects with "timed out after … waiting for `what`" when `promise` has not settled within
 * `ms` milliseconds (default {@link BROWSER_WAIT_MS}); the timer never keeps the process alive.
 */
export async function within<T>(what: string, promise: Promise<T>, ms = BROWSER_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Launches headless Chromium for one test file (one browser per file, a context per user).
 * No sandbox (containers), no background networking (nothing but loopback), no GPU, no /dev/shm.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: BROWSER_WAIT_MS,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/** Closes a browser from `after()`, bounded: a hang names itself instead of stalling the file. Accepts `undefined` (launch failed). */
export async function closeChromium(browser: Browser | undefined): Promise<void> {
  if (browser) await within('Chromium to close', browser.close());
}

/** A browser context (a user's browser profile) whose every action and navigation waits at most {@link BROWSER_WAIT_MS}. */
export async function newBrowserContext(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext();
  context.setDefaultTimeout(BROWSER_WAIT_MS);
  context.setDefaultNavigationTimeout(BROWSER_WAIT_MS);
  return context;
}

/** A user of the development IdP. */
export interface BrowserUser {
  login: string;
  password: string;
}

/** Fills the development IdP's login form (`demo/idp.ts`) and submits it. */
export async function signInAtIdp(page: Page, user: BrowserUser): Promise<void> {
  await page.fill('input[name="login"]', user.login);
  await page.fill('input[name="password"]', user.password);
  await page.click('button[type="submit"]');
}

/**
 * Clicks "Connect" on mcpgate's confirmation page (shown before a browser goes on to an upstream's
 * own authorization server), after checking that it names the expected mcpgate account.
 */
export async function confirmConnect(page: Page, account: string): Promise<void> {
  await page.waitForSelector('form button[value="connect"]');
  const text = (await page.locator('main').textContent()) ?? '';
  if (!text.includes(`signed in to mcpgate as ${account}`)) throw new Error(`the confirmation does not name ${account}: ${text}`);
  await page.click('button[value="connect"]');
}

/** Signs in at an upstream's own authorization server (`demo/upstream-as.ts`: a name, no password) and approves its consent page. */
export async function approveAtUpstream(page: Page, login: string): Promise<void> {
  await page.fill('input[name="login"]', login);
  await page.click('button[type="submit"]');
  await page.click('button[value="approve"]');
}

/** Options of {@link createBrowserAgent}. */
export interface BrowserAgentOptions {
  /** The user's browser profile; several agents may share one (the second finds the IdP session). */
  context: BrowserContext;
  user: BrowserUser;
  /** The agent's loopback redirect URI; something must answer there (e.g. a `RecordingServer`). */
  redirectUri: string;
  /** `client_name` at registration. Default `Test agent of <login>`. */
  clientName?: string;
  /** At an upstream's authorization server (re-challenge chain): the name to sign in with (default `<login>-up`) and the answer to its consent. */
  upstream?: { login?: string; decision?: 'approve' | 'deny' };
  /**
   * Whether the provider implements the SDK's optional `invalidateCredentials` (default true).
   * False: only the methods `OAuthClientProvider` requires, as many applications write it.
   */
  invalidateCredentials?: boolean;
}

/** An SDK `OAuthClientProvider` that keeps everything in memory and authorizes in Chromium (see the module comment). */
export interface BrowserAgent extends OAuthClientProvider {
  readonly user: BrowserUser;
  /** The tokens saved so far (synchronous here: they live in memory). */
  tokens(): OAuthTokens | undefined;
  clientInformation(): OAuthClientInformationMixed | undefined;
  /** The authorization code of the last authorization, once its redirect has loaded. */
  readonly code: string | undefined;
  /** Our consent pages approved so far (pages on the authorization URL's origin). */
  readonly consentPagesSeen: number;
  /** IdP login forms filled so far. */
  readonly loginFormsSeen: number;
  /** Origins of the pages the last authorization acted on, in order; `<origin> (continue)` for a page that moved on by itself. */
  readonly visited: readonly string[];
  /** "METHOD path status" of every request made through {@link BrowserAgent.fetch} (the SDK's OAuth included). */
  readonly requests: readonly string[];
  /** A fetch for the SDK transport that records {@link BrowserAgent.requests}. */
  readonly fetch: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
}

/** Creates a {@link BrowserAgent}. */
export function createBrowserAgent(options: BrowserAgentOptions): BrowserAgent {
  const { context, user, redirectUri } = options;
  const upstreamLogin = options.upstream?.login ?? `${user.login}-up`;
  const upstreamDecision = options.upstream?.decision ?? 'approve';
  let info: OAuthClientInformationMixed | undefined;
  let saved: OAuthTokens | undefined;
  let verifier = '';
  let code: string | undefined;
  let consentPagesSeen = 0;
  let loginFormsSeen = 0;
  let visited: string[] = [];
  const requests: string[] = [];
  let tab: Page | undefined;

  /** Drives the tab from `url` to the redirect URI; resolves with the URL that loaded there. */
  async function authorize(url: URL): Promise<URL> {
    if (!tab) {
      tab = await context.newPage();
      tab.setDefaultTimeout(BROWSER_WAIT_MS);
      tab.setDefaultNavigationTimeout(BROWSER_WAIT_MS);
    }
    const page = tab;
    const ours = url.origin;
    visited = [];
    await page.goto(url.href);
    for (let step = 0; step < 20; step++) {
      await page.waitForLoadState('load');
      // The document's own location: the URL Playwright last saw may already be stale when a page
      // replaces itself (our "Connecting to …" page) while it is being looked at.
      const href = await page.evaluate<string>('location.href').catch(() => undefined);
      if (href === undefined) continue; // navigated meanwhile: look again
      // Only once the loopback page has loaded: closing or reusing a tab mid-navigation can hang Chromium.
      if (href.startsWith(redirectUri)) return new URL(href);
      const at = new URL(href).origin;
      const has = (selector: string) => page.locator(selector).count().then((n) => n > 0);
      let button: string | undefined;
      if (at !== ours && (await has('input[name="password"]'))) {
        loginFormsSeen++;
        await page.fill('input[name="login"]', user.login);
        await page.fill('input[name="password"]', user.password);
        button = 'button[type="submit"]';
      } else if (at !== ours && (await has('input[name="login"]'))) {
        await page.fill('input[name="login"]', upstreamLogin);
        button = 'button[type="submit"]';
      } else if (at !== ours && (await has('button[value="approve"]'))) {
        button = `button[value="${upstreamDecision}"]`;
      } else if (at === ours && (await has('button[value="approve"]'))) {
        consentPagesSeen++;
        button = 'button[value="approve"]';
      } else if (at === ours && (await has('meta[http-equiv="refresh"]'))) {
        button = undefined; // our "Connecting to …" page moves on by itself
      } else if ((await page.evaluate<string>('location.href').catch(() => undefined)) !== href) {
        continue; // moved on while being looked at
      } else {
        throw new Error(`unexpected page ${href}: ${(await page.content()).slice(0, 300)}`);
      }
      visited.push(`${at}${button ? '' : ' (continue)'}`);
      const moved = page.waitForURL((u) => u.href !== href, { waitUntil: 'commit' });
      moved.catch(() => undefined); // awaited below; a failed click must not leave it unhandled
      if (button) await page.click(button, { noWaitAfter: true });
      await moved;
    }
    throw new Error(`no redirect to ${redirectUri} after 20 pages (last: ${page.url()})`);
  }

  return {
    user,
    get code() {
      return code;
    },
    get consentPagesSeen() {
      return consentPagesSeen;
    },
    get loginFormsSeen() {
      return loginFormsSeen;
    },
    get visited() {
      return visited;
    },
    requests,
    get redirectUrl() {
      return redirectUri;
    },
    get clientMetadata(): OAuthClientMetadata {
      return {
        client_name: options.clientName ?? `Test agent of ${user.login}`,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      };
    },
    clientInformation: () => info,
    saveClientInformation(value) {
      info = value;
    },
    tokens: () => saved,
    saveTokens(value) {
      saved = value;
    },
    saveCodeVerifier(value) {
      verifier = value;
    },
    codeVerifier: () => verifier,
    ...(options.invalidateCredentials === false
      ? {}
      : {
          /** What the SDK calls when the server refuses a grant (e.g. the refresh after a step-up). */
          invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
            if (scope === 'all' || scope === 'tokens') saved = undefined;
            if (scope === 'all' || scope === 'client') info = undefined;
          },
        }),
    async redirectToAuthorization(url) {
      code = undefined;
      let callback: URL;
      try {
        callback = await authorize(url);
      } catch (error) {
        const where = tab ? tab.url() : 'no page';
        throw new Error(`${user.login}'s browser did not reach ${redirectUri} (at ${where}, after ${visited.join(' → ') || 'no page'}): ${(error as Error).message}`, { cause: error });
      }
      assert.equal(callback.searchParams.get('error'), null, callback.searchParams.get('error_description') ?? '');
      code = callback.searchParams.get('code') ?? undefined;
    },
    async fetch(input, init) {
      const response = await fetch(input, init);
      const url = new URL(input instanceof Request ? input.url : input);
      requests.push(`${(init?.method ?? 'GET').toUpperCase()} ${url.pathname} ${response.status}`);
      return response;
    },
  };
}

/** An SDK client connected after the browser login, and its transport (for `finishAuth` after a later re-authorization). */
export interface LoggedInClient {
  client: Client;
  transport: StreamableHTTPClientTransport;
}

/**
 * Connects an SDK client to `url` as SDK-based agents do: the first connect meets 401 and runs
 * the OAuth dance in the browser, `finishAuth` trades the code, and a second connect succeeds.
 */
export async function connectWithLogin(agent: BrowserAgent, url: URL, capabilities: ClientCapabilities = {}): Promise<LoggedInClient> {
  const first = new StreamableHTTPClientTransport(url, { authProvider: agent, fetch: agent.fetch });
  await assert.rejects(new Client({ name: 'browser-agent', version: '1.0.0' }).connect(first), UnauthorizedError);
  assert.ok(agent.code, 'the browser leg delivered a code');
  await first.finishAuth(agent.code);
  const transport = new StreamableHTTPClientTransport(url, { authProvider: agent, fetch: agent.fetch });
  const client = new Client({ name: 'browser-agent', version: '1.0.0' }, { capabilities });
  await client.connect(transport);
  return { client, transport };
}

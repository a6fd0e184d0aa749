/**
 * The HTTP re-challenge and the chain behind it (issue 5), nothing stubbed: the SDK
 * client is the agent with its own OAuth; Chromium is the user's browser; oidc-provider plays the
 * company IdP and, as a second unrelated instance, the upstream's own authorization server.
 *
 * The gateway answers a tool call with `403 insufficient_scope, scope="mcp mcpgate:connect:notes"`;
 * the SDK re-authorizes for that scope by itself; our /oauth/authorize takes the browser through
 * the upstream's authorization server before it issues our code; the agent's retry succeeds.
 * When the user denies at the upstream, the agent still gets its code, without the connect scope,
 * and the next call is challenged the same way (which the SDK stops at).
 *
 * Run twice: with a provider that implements the SDK's optional `invalidateCredentials` and with
 * one that has only the required methods (the SDK then presents the refused refresh token again,
 * and the gateway's second refusal must send it to the new authorization: step-up.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPError, type StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeJwt } from 'jose';
import type { Browser } from 'playwright-core';
import { startRecordingServer, type RecordingServer } from '../authserver/login-server.ts';
import { closeChromium, connectWithLogin, createBrowserAgent, launchChromium, newBrowserContext, type BrowserAgent } from '../support/browser-agent.ts';
import { startGateway } from '../support/gateway.ts';
import type { App } from '../../src/app.ts';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { startUpstreamWithAs, type UpstreamWithAs } from '../support/upstream-as.ts';

let idp: DevIdp;
let upstream: UpstreamWithAs;
let app: App;
let gateway: string;
let browser: Browser;
let catcher: RecordingServer;

before(async () => {
  [idp, upstream, catcher] = await Promise.all([startDevIdp(), startUpstreamWithAs({ registration: 'dcr', openHandshake: true }), startRecordingServer()]);
  const started = await startGateway({
    idp,
    storeKey: randomBytes(32),
    server: { drainTimeout: '1s' },
    upstreams: [{ name: 'notes', url: upstream.mcpUrl, auth: { mode: 'oauth', scopes: ['notes:read'], challenge: 'reauthorize' } }],
  });
  app = started.app;
  gateway = started.url.origin;
  browser = await launchChromium();
});

after(async () => {
  await closeChromium(browser);
  await app?.close();
  await Promise.all([upstream?.close(), catcher?.close(), idp?.close()]);
});

/**
 * An agent of `login` in a fresh browser: it signs in (our OAuth, the IdP in the browser) and
 * opens an MCP session (the upstream serves initialize without a token). Its browser answers the
 * upstream's consent page with `upstreamDecision`.
 */
async function signedIn(
  login: string,
  invalidateCredentials: boolean,
  upstreamDecision: 'approve' | 'deny' = 'approve',
): Promise<{ agent: BrowserAgent; client: Client; transport: StreamableHTTPClientTransport }> {
  const user = idp.users.find((u) => u.login === login)!;
  const agent = createBrowserAgent({
    context: await newBrowserContext(browser),
    user: { login: user.login, password: user.password },
    redirectUri: `${catcher.url}/callback`,
    clientName: 'Re-challenge agent',
    upstream: { decision: upstreamDecision },
    invalidateCredentials,
  });
  return { agent, ...(await connectWithLogin(agent, new URL(`${gateway}/notes/mcp`))) };
}

const whoami = (client: Client) => client.callTool({ name: 'whoami', arguments: {} });

/** The token endpoint's answers the agent got, in order ("POST /oauth/token 400", …), from `from` on. */
const tokenAnswers = (agent: BrowserAgent, from: number) => agent.requests.slice(from).filter((r) => r.startsWith('POST /oauth/token '));

// SDK 1.32.2 answers the 403 by refreshing first. A provider with `invalidateCredentials` drops the
// tokens at the first refusal; one without it (the method is optional) refreshes once more: both
// must end in the new authorization, never in a refresh that succeeds into the same 403.
for (const invalidateCredentials of [true, false]) {
  const provider = invalidateCredentials ? 'a provider with invalidateCredentials' : 'a provider with only the required methods';
  describe(`HTTP re-challenge (${provider}): the SDK agent steps up and /oauth/authorize chains through the upstream`, () => {
    test('403 insufficient_scope → the SDK re-authorizes for the connect scope → connected before our code → the retry succeeds', async () => {
      const { agent, client, transport } = await signedIn('alice', invalidateCredentials);
      try {
        const before = decodeJwt(agent.tokens()!.access_token);
        assert.equal(before.scope, 'mcp');

        // The SDK sees 403 insufficient_scope, authorizes for the challenge's scope, and asks us to finish.
        const sent = agent.requests.length;
        await assert.rejects(whoami(client), UnauthorizedError);
        assert.deepEqual(
          tokenAnswers(agent, sent),
          invalidateCredentials ? ['POST /oauth/token 400'] : ['POST /oauth/token 400', 'POST /oauth/token 400'],
          'every refresh after the challenge refused, none answered with tokens',
        );
        assert.deepEqual(
          agent.visited.filter((v) => !v.endsWith('(continue)')),
          [gateway, upstream.issuer, upstream.issuer],
          'our consent for the new scope (the IdP remembers the user), then the upstream login and consent',
        );
        await transport.finishAuth(agent.code!);
        const after = decodeJwt(agent.tokens()!.access_token);
        assert.equal(after.scope, 'mcp mcpgate:connect:notes');
        assert.notEqual(after.sid, before.sid, 'a new session, connected before its first token was issued');

        assert.deepEqual((await whoami(client)).content, [{ type: 'text', text: 'upstream user alice-up' }]);
      } finally {
        await client.close();
      }
      for (const seen of upstream.seenAuthorization) {
        if (seen) assert.equal(decodeJwt(seen.slice('Bearer '.length)).iss, upstream.issuer, 'the upstream saw only its own tokens');
      }
    });

    test('denied at the upstream: the code comes without the connect scope, and the next call is challenged again', async () => {
      const { agent, client, transport } = await signedIn('bob', invalidateCredentials, 'deny');
      try {
        await assert.rejects(whoami(client), UnauthorizedError);
        await transport.finishAuth(agent.code!);
        assert.equal(decodeJwt(agent.tokens()!.access_token).scope, 'mcp');
        const error = await whoami(client).then(() => assert.fail('expected the same challenge'), (e: unknown) => e);
        assert.ok(error instanceof StreamableHTTPError, `got ${String(error)}`);
        assert.equal(error.code, 403);
      } finally {
        await client.close();
      }
    });
  });
}

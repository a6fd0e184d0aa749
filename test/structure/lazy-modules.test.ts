/**
 * What a configuration never runs is never loaded (src/app/lazy.ts): a gateway without `idp:`
 * loads neither the login (the authorization server's endpoints, the IdP clients,
 * openid-client) nor the credential modes none of its upstreams has (jose with token
 * exchange). Every module resolved in this process is recorded, by import or by require;
 * the second app, with login and a token-exchange upstream, shows that the loads made on
 * first use are recorded too.
 */
import assert from 'node:assert/strict';
import { registerHooks } from 'node:module';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const resolved = new Set<string>();
registerHooks({
  resolve(specifier, context, next) {
    const result = next(specifier, context);
    resolved.add(result.url);
    return result;
  },
});

const root = fileURLToPath(new URL('../..', import.meta.url));
/** Modules only a gateway with login, or with an upstream in those modes, uses. */
const LOGIN_ONLY = [
  'src/app/login.ts', 'src/idp/oidc.ts', 'src/idp/oauth2.ts', 'src/authserver/login/login-flow.ts', 'src/authserver/login/html.ts',
  'src/authserver/tokens/token.ts', 'src/gateway/verify-token.ts', 'src/gateway/session-owner.ts', 'src/upstream-oauth/routes.ts',
  'src/credentials/token-exchange.ts', 'src/credentials/idp.ts', 'node_modules/openid-client/', 'node_modules/jose/',
];
/** A module of ours by its path from the repository, a package by `node_modules/<name>/` (wherever that directory really is). */
const loaded = (path: string) =>
  [...resolved].some((url) => url.startsWith('file:') && (path.startsWith('src/') ? fileURLToPath(url).startsWith(`${root}${path}`) : url.includes(`/${path}`)));

describe('modules loaded on first use', () => {
  it('a gateway in mode none without login never loads the login or the other credential modes', async () => {
    const { createApp } = await import('../../src/app.ts');
    const { parseConfig } = await import('../../src/config/load.ts');
    const config = parseConfig(
      ['server:', '  listen: "127.0.0.1:0"', '  publicUrl: "http://127.0.0.1:8080"', '  devMode: true', '  logLevel: silent', 'upstreams:', '  - name: up', '    url: "http://127.0.0.1:9/mcp"'].join('\n'),
      'lazy-modules.test.ts',
      { env: {}, readFile: () => '' },
    );
    const app = createApp(config);
    await app.listen({ host: '127.0.0.1', port: 0 });
    await app.close();
    assert.ok(loaded('src/app/gateway.ts') && loaded('node_modules/undici/'), 'the hook records what is loaded');
    assert.deepEqual(LOGIN_ONLY.filter(loaded), []);

    const withLogin = parseConfig(
      [
        'server:', '  listen: "127.0.0.1:0"', '  publicUrl: "http://127.0.0.1:8080"', '  devMode: true', '  logLevel: silent',
        'idp:', '  issuer: "http://127.0.0.1:9"', '  clientId: test', '  clientSecret: "env:IDP_SECRET"',
        'upstreams:',
        '  - name: up', '    url: "http://127.0.0.1:9/mcp"', '    auth: { mode: idp }',
        '  - name: exchanged', '    url: "http://127.0.0.1:9/mcp"', '    auth: { mode: token_exchange, tokenEndpoint: "http://127.0.0.1:9/token", audience: up, clientId: gw }',
      ].join('\n'),
      'lazy-modules.test.ts',
      { env: { IDP_SECRET: 'test-secret' }, readFile: () => '' },
    );
    const second = createApp(withLogin);
    await second.close();
    assert.deepEqual(LOGIN_ONLY.filter((path) => !loaded(path) && path !== 'src/idp/oauth2.ts'), []);
  });
});

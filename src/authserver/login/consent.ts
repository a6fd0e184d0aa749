/**
 * The consent page (the MCP spec's confused-deputy rule): a gateway that logs users in
 * at the company IdP with one fixed client of its own must ask each user before it hands a code
 * to a client that anyone could have registered. The page names the client and the host its
 * answer goes to (with a warning when the client lives on the user's own computer, and one naming
 * the scheme when the answer opens whichever app on the device registered a private-use scheme),
 * lists the scopes, and cannot be framed. Its form is protected by a CSRF token bound to the parked request
 * and to a cookie of this browser, and by Origin / Fetch-Metadata checks.
 *
 * An approval is remembered per user and client, both in this browser (a signed cookie) and
 * server-side (`consents`); the page is skipped only when both remember it for the scopes asked.
 */
import type { IncomingMessage } from 'node:http';
import { readForm, refuseCrossSitePost } from '../../http/form.ts';
import { Forbidden, InvalidRequest } from '../../http/errors.ts';
import type { Handler, RequestContext } from '../../http/router.ts';
import { sendAuthorizationError } from './authorization-response.ts';
import { finishAuthorization } from './connect-chain.ts';
import { escapeHtml, page, sendHtml, withHtmlErrors } from './html.ts';
import type { LoginFlow } from './types.ts';
import type { ClientRecord, PendingAuthorization } from '../records/records.ts';
import { isLoopbackRedirect, privateUseScheme } from '../clients/redirect-uri.ts';
import { formTokens } from './cookies.ts';

/** Remembered approvals kept in the consent cookie (the most recent first). */
const MAX_COOKIE_CONSENTS = 20;

/** Human descriptions of our scopes; anything else is shown as its name. */
const SCOPE_DESCRIPTIONS: Record<string, string> = {
  mcp: 'Use the MCP servers behind this gateway as you, with your company account',
};

/** True when both this browser's consent cookie and the server remember that `subject` approved `clientId` for `scopes`. */
export async function hasConsent(flow: LoginFlow, req: IncomingMessage, subject: string, clientId: string, scopes: readonly string[]): Promise<boolean> {
  const remembered = flow.cookies.read<{ g?: unknown }>(req, 'mcpgate-consent')?.g;
  if (!Array.isArray(remembered) || !remembered.includes(consentEntry(flow, subject, clientId))) return false;
  const record = await flow.stores.consents.get(subject, clientId);
  return record !== undefined && scopes.every((s) => record.scopes.includes(s));
}

/** The entry naming (user, client) in the consent cookie: a MAC, so the cookie reveals neither. */
function consentEntry(flow: LoginFlow, subject: string, clientId: string): string {
  return flow.cookies.mac('consent', subject, clientId).slice(0, 22);
}

/** What the consent page shows besides the client and the parked request. */
export interface ConsentPageInput {
  client: ClientRecord;
  pending: PendingAuthorization;
  /** The id the parked request is stored under until the form is posted. */
  consentId: string;
  /** Who signed in, for display (a name or e-mail from the ID token, else the subject). */
  userLabel: string;
  /** Cookies to set with the page (our login cookie). */
  setCookie: string[];
}

/** Writes the consent page; also sets (or keeps) this browser's CSRF cookie. */
export function sendConsentPage(flow: LoginFlow, ctx: RequestContext, input: ConsentPageInput): void {
  const { client, pending } = input;
  const { token: csrf, setCookie: csrfCookie } = formTokens(flow.cookies).issue(ctx.req, Math.ceil(flow.pendingTtlMs / 1000), 'csrf', input.consentId);

  const redirect = new URL(pending.redirectUri);
  const appScheme = privateUseScheme(pending.redirectUri);
  const redirectHost = appScheme === undefined ? redirect.host : `the app registered for ${appScheme}: on your device`;
  const onThisComputer = client.redirectUris.every(isLoopbackRedirect);
  const identity =
    client.kind === 'cimd'
      ? `<strong>${escapeHtml(new URL(client.clientId).host)}</strong>${client.clientName ? ` (“${escapeHtml(client.clientName)}”)` : ''}`
      : client.clientName
        ? `<strong>“${escapeHtml(client.clientName)}”</strong> <span class="muted">(the name the application gave itself; not verified)</span>`
        : '<strong>An application that did not give its name</strong>';
  const scopes = pending.scopes.map((s) => `<li><code>${escapeHtml(s)}</code>: ${escapeHtml(SCOPE_DESCRIPTIONS[s] ?? s)}</li>`).join('\n');
  const title = `Allow ${client.kind === 'cimd' ? new URL(client.clientId).host : (client.clientName ?? 'this application')} to access your account?`;

  const body = `<p>You are signed in as <strong>${escapeHtml(input.userLabel)}</strong>.</p>
<p>Application: ${identity}<br><span class="muted">Client ID: <code>${escapeHtml(client.clientId)}</code></span></p>
<p>After you answer, you are sent to <strong id="redirect-host">${escapeHtml(redirectHost)}</strong>.</p>
${appScheme !== undefined ? `<p class="warning" role="alert" id="private-use-warning"><strong>Your answer opens the app registered for <code>${escapeHtml(appScheme)}:</code> on your device.</strong> Any application installed on this device can claim that scheme. Approve only if you just started this sign-in yourself, from an application you trust.</p>` : ''}
${onThisComputer ? `<p class="warning" role="alert" id="loopback-warning"><strong>This app runs on your computer.</strong> It receives your approval at <code>${escapeHtml(redirectHost)}</code>, an address on the device you are using. Approve only if you just started this sign-in yourself, from an application you trust.</p>` : ''}
<p>It asks for access to <code>${escapeHtml(pending.resource)}</code>:</p>
<ul>
${scopes}
</ul>
<form method="post" action="${escapeHtml(flow.issuer)}/oauth/consent">
<input type="hidden" name="consent_id" value="${escapeHtml(input.consentId)}">
<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">
<div class="actions">
<button type="submit" name="decision" value="approve" class="primary">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</div>
</form>`;
  // The form's answer redirects to the client: browsers check that redirect against form-action too.
  const formTarget = redirect.protocol === 'http:' || redirect.protocol === 'https:' ? redirect.origin : redirect.protocol;
  sendHtml(ctx.res, 200, page(title, body), { formTargets: [formTarget], setCookie: [...input.setCookie, csrfCookie] });
}

/** `POST /oauth/consent`: the consent form. Every refusal is an HTML page; 403 for a request that did not come from our page. */
export function createConsentEndpoint(flow: LoginFlow): Handler {
  const origin = new URL(flow.issuer).origin;

  return withHtmlErrors(flow.logger, async function consent(ctx) {
    refuseCrossSitePost(ctx.req, origin);
    let form: Map<string, string>;
    try {
      form = await readForm(ctx.req, 8 * 1024);
    } catch (error) {
      throw new InvalidRequest('The consent form could not be read.', { cause: error });
    }
    const consentId = form.get('consent_id') ?? '';
    const token = form.get('csrf') ?? '';
    // Checked before the parked request is taken: a forged post must not consume the real one.
    if (!consentId || !formTokens(flow.cookies).verify(ctx.req, token, 'csrf', consentId)) {
      throw new Forbidden('This form did not come from this sign-in page, or it has expired. Start the sign-in again from your application.');
    }

    const pending = await flow.stores.pending.take(consentId);
    if (!pending || pending.subject === undefined || pending.sessionId === undefined) {
      throw new InvalidRequest('This approval page has expired or was already answered. Start the sign-in again from your application.');
    }
    const subject = pending.subject;
    const sessionId = pending.sessionId;
    const to = { redirectUri: pending.redirectUri, state: pending.clientState, issuer: flow.issuer };
    ctx.log.clientId = pending.clientId;

    if (form.get('decision') !== 'approve') {
      // The session made for this login has no use now; its IdP tokens go with it.
      await flow.stores.sessions.revoke(sessionId);
      ctx.log.consent = 'denied';
      return sendAuthorizationError(ctx.res, to, 'access_denied', 'the user denied the request');
    }

    const previous = await flow.stores.consents.get(subject, pending.clientId);
    const scopes = [...new Set([...(previous?.scopes ?? []), ...pending.scopes])];
    await flow.stores.consents.put(subject, pending.clientId, { scopes, grantedAt: flow.now() }, flow.consentTtlMs);
    // The session was provisional (as long as the page); it now lives as long as a session does.
    const session = await flow.stores.sessions.extend(sessionId, flow.now() + flow.sessionTtlMs);
    if (!session) return sendAuthorizationError(ctx.res, to, 'access_denied', 'the sign-in ended before it was approved');
    ctx.log.consent = 'approved';
    await finishAuthorization(flow, ctx.res, pending, { subject, sessionId }, [rememberInBrowser(flow, ctx.req, subject, pending.clientId), flow.cookies.clear('mcpgate-csrf')]);
  });
}

/** The consent cookie with (subject, client) added in front. */
function rememberInBrowser(flow: LoginFlow, req: IncomingMessage, subject: string, clientId: string): string {
  const entry = consentEntry(flow, subject, clientId);
  const current = flow.cookies.read<{ g?: unknown }>(req, 'mcpgate-consent')?.g;
  const kept = Array.isArray(current) ? current.filter((e): e is string => typeof e === 'string' && e !== entry) : [];
  return flow.cookies.serialize('mcpgate-consent', { g: [entry, ...kept].slice(0, MAX_COOKIE_CONSENTS) }, { maxAgeSeconds: Math.ceil(flow.consentTtlMs / 1000) });
}

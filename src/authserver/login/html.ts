/**
 * The few HTML pages of our authorization server (the consent page, error pages): self-contained
 * (no external assets, no script), never framed, never cached.
 */
import type { ServerResponse } from 'node:http';
import { toHttpError } from '../../http/errors.ts';
import type { Handler } from '../../http/router.ts';
import { describeCause } from '../../http/server.ts';
import type { Logger } from '../../observability/logger.ts';

/**
 * The Content-Security-Policy of every page: nothing loads but inline style, forms post only to
 * us, and no site may frame the page (clickjacking the Approve button). `formTargets` adds the
 * origins a form's response may redirect to: browsers apply `form-action` to the redirect after
 * a submission too, and the consent form's answer redirects to the client.
 */
export function contentSecurityPolicy(formTargets: string[] = []): string {
  const targets = ["'self'", ...formTargets].join(' ');
  return `frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'; form-action ${targets}; base-uri 'none'`;
}

/** Writes an HTML page with the framing, caching and sniffing headers every page of ours carries. */
export function sendHtml(
  res: ServerResponse,
  status: number,
  html: string,
  options: { formTargets?: string[]; setCookie?: string[]; headers?: Record<string, string> } = {},
): void {
  const headers: Record<string, string | string[] | number> = {
    ...options.headers,
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'content-security-policy': contentSecurityPolicy(options.formTargets),
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    // Not no-referrer: under it browsers send `Origin: null` with form posts, and the consent
    // form's Origin check needs the real one. Other sites still get no referrer (the callback's
    // URL holds the IdP's code).
    'referrer-policy': 'same-origin',
    'cache-control': 'no-store',
  };
  if (options.setCookie && options.setCookie.length > 0) headers['set-cookie'] = options.setCookie;
  res.writeHead(status, headers);
  res.end(html);
}

/** Escapes text for HTML element content and double-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** A complete page around `body` (already escaped HTML). */
export function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;color:#1d1d1f;background:#f5f5f7;margin:0}
main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}
h1{font-size:1.35rem;margin-top:0}
.warning{background:#fff4e5;border-left:4px solid #f59e0b;padding:.75rem 1rem}
.muted{color:#555;font-size:.9rem}
code{word-break:break-all}
ul{padding-left:1.25rem}
.actions{display:flex;gap:1rem;margin-top:1.5rem}
button{font:inherit;padding:.6rem 1.4rem;border-radius:8px;border:1px solid #888;background:#fff;cursor:pointer}
button.primary{background:#0b57d0;border-color:#0b57d0;color:#fff}
</style>
</head>
<body><main>
<h1>${escapeHtml(title)}</h1>
${body}
</main></body>
</html>
`;
}

/**
 * An error page for what cannot be sent back to the client (an unknown client, an untrusted
 * redirect URI, an expired login). `description` is shown as text; it must hold no secret.
 */
export function sendErrorPage(
  res: ServerResponse,
  status: number,
  title: string,
  description: string,
  options: { setCookie?: string[]; headers?: Record<string, string> } = {},
): void {
  const body = `<p id="error-description">${escapeHtml(description)}</p>
<p class="muted">Return to your application and start the sign-in again. If this keeps happening, tell your administrator.</p>`;
  sendHtml(res, status, page(title, body), options);
}

/**
 * Wraps a handler of a page the browser shows (authorize, callback, consent), so that whatever it
 * throws becomes an HTML error page with the error's status, never JSON and never a redirect to a
 * URI nobody checked. 5xx details go to the log, not the page.
 */
export function withHtmlErrors(logger: Logger, handler: Handler): Handler {
  return async (ctx) => {
    try {
      await handler(ctx);
    } catch (thrown) {
      const error = toHttpError(thrown);
      if (error.status >= 500) logger.error({ msg: 'request failed', reqId: ctx.requestId, failure: describeCause(thrown) });
      ctx.log.error = error.code;
      if (ctx.res.headersSent) {
        ctx.res.destroy();
        return;
      }
      const description = error.expose || error.status === 503 ? error.message : 'Something went wrong on our side. Try again in a moment.';
      sendErrorPage(ctx.res, error.status, titleFor(error.status), description, { headers: error.headers });
    }
  };
}

function titleFor(status: number): string {
  if (status === 403) return 'Request refused';
  if (status === 429) return 'Too many requests';
  if (status === 503) return 'Temporarily unavailable';
  if (status >= 500) return 'Something went wrong';
  return 'Sign-in failed';
}

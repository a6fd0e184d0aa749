/**
 * The browser pages of the upstream OAuth flow (the "Connect X?" confirmation, "Connected to X",
 * and one error page per failure): self-contained (no external asset, no script), never framed, never cached, every
 * dynamic value HTML-escaped.
 */
import type { ServerResponse } from 'node:http';

/** Headers every page and redirect of the flow carries. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // The start URL and the callback carry a flow id, a state and a code: never leak them onward.
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
} as const;

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** What a page says. Every field is plain text; it is escaped here. */
export interface PageContent {
  title: string;
  message: string;
  /** A second, smaller line. */
  hint?: string;
  /** A link to follow (e.g. "Sign in"); its URL must be ours. */
  link?: { href: string; text: string };
}

/** Writes a complete HTML page. */
export function sendPage(res: ServerResponse, status: number, content: PageContent): void {
  const link = content.link ? `<p><a href="${escapeHtml(content.link.href)}">${escapeHtml(content.link.text)}</a></p>` : '';
  const hint = content.hint ? `<p class="hint">${escapeHtml(content.hint)}</p>` : '';
  const html = document(content.title, `<p>${escapeHtml(content.message)}</p>${hint}${link}`);
  res.writeHead(status, { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
  res.end(html);
}

/** A page that asks the user to confirm with a button: a form posted back to us. */
export interface ConfirmContent extends PageContent {
  /** Where the form posts (a URL of ours). */
  action: string;
  /** Hidden fields of the form. */
  fields: Record<string, string>;
  /** The button's label. */
  button: string;
  /** Cookies to set with the page (the CSRF nonce). */
  setCookie: string[];
}

/**
 * Writes a confirmation page. Its form may post only to us, and the page's referrer policy is
 * `same-origin` (under `no-referrer` browsers post with `Origin: null`, which the cross-site
 * check of the form's handler would refuse).
 */
export function sendConfirmPage(res: ServerResponse, content: ConfirmContent): void {
  const hint = content.hint ? `<p class="hint">${escapeHtml(content.hint)}</p>` : '';
  const fields = Object.entries(content.fields)
    .map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`)
    .join('');
  const form = `<form method="post" action="${escapeHtml(content.action)}">${fields}<button type="submit" name="decision" value="connect">${escapeHtml(content.button)}</button></form>`;
  const html = document(content.title, `<p>${escapeHtml(content.message)}</p>${hint}${form}`);
  res.writeHead(200, {
    ...PAGE_HEADERS,
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    'referrer-policy': 'same-origin',
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'set-cookie': content.setCookie,
  });
  res.end(html);
}

/**
 * The answer to a confirmation: a page that moves the browser on to the upstream's authorization
 * endpoint, instead of a redirect. Browsers apply the confirmation page's `form-action` to every
 * redirect of its submission, and the upstream's authorization server is not among its targets
 * (for `/connect/{name}` it is discovered only after the click); a new navigation starts outside
 * the form's policy.
 */
export function sendOnward(res: ServerResponse, content: { url: string; upstream: string }): void {
  const url = escapeHtml(content.url);
  const html = document(`Connecting to ${content.upstream}`, `<p>${escapeHtml(content.upstream)} has its own sign-in. You are being sent there to allow mcpgate to use it for you.</p><p><a href="${url}">Continue to ${escapeHtml(content.upstream)}</a></p>`).replace(
    '<meta name="robots" content="noindex">',
    `<meta name="robots" content="noindex"><meta http-equiv="refresh" content="0;url=${url}">`,
  );
  res.writeHead(200, { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
  res.end(html);
}

/** A whole HTML document around `body` (already escaped). */
function document(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>${escapeHtml(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;color:#1d1d1f;background:#f5f5f7;margin:0}main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}h1{font-size:1.35rem;margin-top:0}.hint{color:#555;font-size:.9rem}button{font:inherit;padding:.5rem 1.2rem;border-radius:8px;border:1px solid #0071e3;background:#0071e3;color:#fff}</style>
</head><body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>
`;
}

/** A redirect that carries the page headers (no caching, no referrer). */
export function sendRedirect(res: ServerResponse, location: string, status: 302 | 303 = 303): void {
  res.writeHead(status, { ...PAGE_HEADERS, location, 'content-length': 0 });
  res.end();
}

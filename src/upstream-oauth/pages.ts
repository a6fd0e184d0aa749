/**
 * The browser pages of the upstream OAuth flow ("Connected to X", and one error page per
 * failure): self-contained (no external asset, no script), never framed, never cached, every
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
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>${escapeHtml(content.title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;color:#1d1d1f;background:#f5f5f7;margin:0}main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}h1{font-size:1.35rem;margin-top:0}.hint{color:#555;font-size:.9rem}</style>
</head><body><main><h1>${escapeHtml(content.title)}</h1><p>${escapeHtml(content.message)}</p>${hint}${link}</main></body></html>
`;
  res.writeHead(status, { ...PAGE_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
  res.end(html);
}

/** A redirect that carries the page headers (no caching, no referrer). */
export function sendRedirect(res: ServerResponse, location: string, status: 302 | 303 = 303): void {
  res.writeHead(status, { ...PAGE_HEADERS, location, 'content-length': 0 });
  res.end();
}

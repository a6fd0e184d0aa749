/** Reading the gateway's `/metrics` (Prometheus text format) in tests. */

/** The exposition text of `GET {base}/metrics`. */
export async function scrapeMetrics(base: string | URL): Promise<string> {
  const res = await fetch(new URL('metrics', String(base).endsWith('/') ? base : `${base}/`));
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** The value of the series `name` whose labels are exactly `labels`; 0 when there is none yet (a counter not incremented). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))]);
    if (JSON.stringify(found.sort(([a], [b]) => a!.localeCompare(b!))) === wanted) return Number(match[3]);
  }
  return 0;
}

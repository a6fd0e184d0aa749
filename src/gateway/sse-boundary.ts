/**
 * Where events end in a `text/event-stream` body, read as bytes as it streams by: a blank line
 * (`\n\n` or `\r\n\r\n`) ends an event (WHATWG HTML §9.2.6). forward.ts writes our own events
 * and keep-alive comments only there, and a shutdown ends a stream only there, so the agent never
 * receives half an event.
 */

/**
 * Where the first event ending in `chunk` ends (the index just past its blank line), or -1.
 * `tail` is the last bytes written before `chunk`, since a blank line may straddle the two.
 */
export function eventEnd(tail: Buffer, chunk: Buffer): number {
  const joined = Buffer.concat([tail, chunk]);
  for (let i = tail.length; i < joined.length; i++) {
    if (joined[i] !== 0x0a) continue;
    if (i >= 1 && joined[i - 1] === 0x0a) return i + 1 - tail.length;
    if (i >= 3 && joined[i - 1] === 0x0d && joined[i - 2] === 0x0a && joined[i - 3] === 0x0d) return i + 1 - tail.length;
  }
  return -1;
}

/** True when an SSE chunk ends at an event boundary (a blank line), where a comment may be inserted. */
export function endsEvent(chunk: Buffer): boolean {
  const n = chunk.length;
  return (n >= 2 && chunk[n - 1] === 0x0a && chunk[n - 2] === 0x0a) || (n >= 4 && chunk[n - 1] === 0x0a && chunk[n - 2] === 0x0d && chunk[n - 3] === 0x0a);
}

/**
 * What the two development OpenID providers (`idp.ts`, the company IdP; `upstream-as.ts`, an
 * upstream's own authorization server) both need from `oidc-provider` and would otherwise each
 * write: a model store private to one provider, and a way to hand back a request body that was
 * read before the provider saw it.
 */
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

interface StoredModel {
  payload: Record<string, unknown>;
  /** Epoch ms; `Infinity` for models stored without a lifetime. */
  expiresAt: number;
}

/**
 * Storage for a provider's models (sessions, grants, codes, tokens), private to one provider: the
 * library's built-in one is shared by every provider in the process and warns on each start.
 * Returns the adapter class `oidc-provider` expects as `adapter` (one instance per model name).
 */
export function createMemoryAdapter() {
  const models = new Map<string, StoredModel>();
  const live = (key: string) => {
    const entry = models.get(key);
    if (entry && entry.expiresAt <= Date.now()) models.delete(key);
    return entry && entry.expiresAt > Date.now() ? entry : undefined;
  };
  return class MemoryAdapter {
    readonly name: string;
    constructor(name: string) {
      this.name = name;
    }
    key(id: string) {
      return `${this.name}:${id}`;
    }
    /** `expiresIn` in seconds, as oidc-provider passes it. */
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
      models.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
    }
    async find(id: string) {
      return live(this.key(id))?.payload;
    }
    async findByUid(uid: string) {
      for (const [key, entry] of models) if (key.startsWith(`${this.name}:`) && entry.payload['uid'] === uid) return live(key)?.payload;
      return undefined;
    }
    async findByUserCode(userCode: string) {
      for (const [key, entry] of models) if (key.startsWith(`${this.name}:`) && entry.payload['userCode'] === userCode) return live(key)?.payload;
      return undefined;
    }
    async consume(id: string) {
      const entry = live(this.key(id));
      if (entry) entry.payload['consumed'] = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      models.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [key, entry] of models) if (entry.payload['grantId'] === grantId) models.delete(key);
    }
  };
}

/**
 * Makes a request whose body was already read (to look at it first) readable again with that
 * body, so `oidc-provider` parses it as it would a fresh request. (Handing it a parsed `req.body`
 * instead works too, but the provider then warns about an "already parsed request body".)
 */
export function replayBody(req: IncomingMessage, body: Buffer): void {
  const replay = Readable.from([body]);
  Object.defineProperty(req, 'readable', { value: true, configurable: true });
  req.iterator = (options) => replay.iterator(options);
}

/** Reads a request body whole; refuses more than `limit` bytes (default 256 KiB). */
export async function readAll(req: IncomingMessage, limit = 256 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * A bound on the request-body bytes this process holds at once. Each MCP POST body is buffered
 * whole (for its JSON-RPC id and a replay after an upstream 401), so without a global bound many
 * concurrent large bodies add up past the pod's memory limit even though each is under
 * `server.maxBodyBytes`. Past the bound a request is refused with 503 + `Retry-After` before its
 * body is read.
 *
 * Per process by design: the bound protects this process's memory, which no other replica shares.
 */
import { ServiceUnavailable } from './errors.ts';

/** Options of {@link createBodyBudget}. */
export interface BodyBudgetOptions {
  /** Bytes that may be buffered at once across all requests (`server.maxBodyBytesInFlight`). */
  maxBytes: number;
  /** Called with the bytes held after every change (a gauge). */
  onChange?(bytes: number): void;
}

/** The shared account of buffered request-body bytes. */
export interface BodyBudget {
  /** Books `bytes`; throws the 503 refusal when the bound would be passed (nothing is booked then). */
  reserve(bytes: number): void;
  /** Returns bytes booked earlier. */
  release(bytes: number): void;
  /** Bytes booked now. */
  readonly bytes: number;
}

/** Seconds an agent is asked to wait before retrying a request refused for lack of room. */
const RETRY_AFTER_SECONDS = 2;

/** Creates the budget; `maxBytes` must be a positive integer. */
export function createBodyBudget(options: BodyBudgetOptions): BodyBudget {
  const { maxBytes } = options;
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new TypeError('maxBytes must be a positive integer');
  let booked = 0;
  return {
    reserve(bytes) {
      if (booked + bytes > maxBytes) {
        throw new ServiceUnavailable('the gateway is holding too many request bodies at once; retry shortly', {
          // The body stays unread: close the connection after answering rather than drain it.
          headers: { 'retry-after': String(RETRY_AFTER_SECONDS), connection: 'close' },
        });
      }
      booked += bytes;
      options.onChange?.(booked);
    },
    release(bytes) {
      booked = Math.max(0, booked - bytes);
      options.onChange?.(booked);
    },
    get bytes() {
      return booked;
    },
  };
}
